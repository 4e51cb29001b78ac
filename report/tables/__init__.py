"""The builtin tables; importing this package registers them (:mod:`condi_pipe.report.registry`), in the order
the CLI lists them: the import order below is the registration order, so it is not sorted."""

# isort: off
from condi_pipe.report.tables import time_tables  # noqa: F401  (3, 4)
from condi_pipe.report.tables import accuracy  # noqa: F401  (accuracy, oracle)
from condi_pipe.report.tables import confidence  # noqa: F401
from condi_pipe.report.tables import sgs  # noqa: F401
from condi_pipe.report.tables import kinds  # noqa: F401
from condi_pipe.report.tables import sweep  # noqa: F401
from condi_pipe.report.tables import pairwise  # noqa: F401  (ConDi against each method of 3)
from condi_pipe.report.tables import adaptive  # noqa: F401  (adaptive clip budgets against fixed K)
# isort: on
