from tests.contract.conftest import database, pg, pg_template, pool  # noqa: F401  TEMPORARY
