"""Run hwkit's conformance kit over every registered plugin on the mock CPU device.

The same classes run for a third party with ``pytest --pyargs hwkit.testing.suite``.
"""

from hwkit.testing.suite.test_registered import (  # noqa: F401 - collected by pytest
    TestRegisteredBackends,
    TestRegisteredDevices,
    TestRegisteredEmbedders,
    TestRegisteredExporters,
    TestRegisteredRetrievers,
    TestRegisteredRuntimes,
    TestRegisteredTrainers,
)
