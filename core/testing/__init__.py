"""hwkit's testing kit, shipped with the package: a mock device and conformance suites.

Third-party plugins test against these instead of mocking hwkit's internals.
"""

from hwkit.testing.mock import MockBackend, MockDevice, mock_device, mock_runtime

__all__ = ["MockBackend", "MockDevice", "mock_device", "mock_runtime"]
