// A real OpenID provider on loopback for the OIDC login tests (tests/integration/test_oidc.py).
//
// Configured from the environment by the pytest fixture that starts it:
//   OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI
// Two clients share the redirect URI: OIDC_CLIENT_ID, confidential (client secret
// in HTTP Basic), and OIDC_CLIENT_ID + "-public", a public client (PKCE alone).
// It serves discovery at http://127.0.0.1:$OIDC_PORT/.well-known/openid-configuration.
//
// Sign-in uses oidc-provider's development interactions (its own login and
// consent forms). Any login name is accepted, and the account it names carries:
//   sub             the login name
//   email           the login name if it looks like an address, else <name>@example.test
//   email_verified  false for names starting "unverified", true otherwise
// so a test chooses who it signs in as just by what it types into the form.

import { generateKeyPairSync, randomBytes } from "node:crypto";

import Provider from "oidc-provider";

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required("OIDC_PORT"));
const clientId = required("OIDC_CLIENT_ID");
const redirectUri = required("OIDC_REDIRECT_URI");
const issuer = `http://127.0.0.1:${port}`;

// A fresh signing key per run: the tests read it from jwks_uri like any client would.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "test-1", use: "sig", alg: "RS256" };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: required("OIDC_CLIENT_SECRET"),
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
    {
      client_id: `${clientId}-public`,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  // Put the scope's claims (email) into the ID token itself, as most providers do.
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], email: ["email", "email_verified"] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: id.includes("@") ? id : `${id}@example.test`,
          email_verified: !id.startsWith("unverified"),
        };
      },
    };
  },
});

const server = provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc provider ready at ${issuer}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
