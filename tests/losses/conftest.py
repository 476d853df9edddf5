"""Loss tests run single-threaded: their small convolutions gain nothing from a second thread, and
spin-waiting intra-op threads slow them down 10x+ when the CPU is shared with other jobs."""

from tests.helpers.threads import single_thread  # noqa: F401  (autouse fixture)
