"""Errors the device layer raises: each carries a message a person can act on.

Never raise a bare code: the text is what the therapist or physicist reads.
"""
from __future__ import annotations


class DeviceError(Exception):
    """Something went wrong talking to a device. `message` says what and what to do."""

    def __init__(self, message: str, *, device: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.device = device


class InvalidRequest(DeviceError, ValueError):
    """The console asked for a value outside the device's range (refused, never clipped)."""


class DeviceRefused(DeviceError):
    """The device answered with a refusal (NAK or error reply). `code` is the device's code."""

    def __init__(self, message: str, *, code: str, device: str = "") -> None:
        super().__init__(message, device=device)
        self.code = code


class LinkLost(DeviceError):
    """No valid answer within the deadline after bounded retries: the link is considered lost."""


class ProtocolMismatch(DeviceError):
    """The handshake found a protocol or schema version the console does not speak."""
