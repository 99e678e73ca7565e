"""WebhookConsumer: sends each value to an HTTP endpoint as JSON (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from videoflow.consumers.video import to_json
from videoflow.core.node import ConsumerNode


def json_body(value: Any) -> bytes:
    """``value`` as JSON bytes: text and bytes are taken to be JSON already and sent as they
    are; arrays become lists. TypeError names a value that JSON cannot hold."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return json.dumps(to_json(value)).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot send a {type(value).__name__} as JSON: {exc}") from exc


class WebhookConsumer(ConsumerNode):
    """Sends each value it receives to ``host`` (a URL) in one HTTP request, as a JSON body.

    method:   the HTTP method, ``"post"`` by default.
    timeout:  seconds to wait for the server; a failed or refused request (an HTTP status of
              400 or more) stops the flow with an error that names the URL.
    A str or bytes value is sent as it is (the original videoflow expected JSON text); any
    other value is converted to JSON, arrays as lists. Several parents: a JSON list.
    """

    def __init__(
        self,
        host: str,
        method: str = "post",
        timeout: float = 10.0,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(host, str) or not host.startswith(("http://", "https://")):
            raise ValueError(f"host must be an http:// or https:// URL, got {host!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.host = host
        self.method = method.upper()
        self.timeout = float(timeout)

    def consume(self, *inputs: Any) -> None:
        body = json_body(inputs[0] if len(inputs) == 1 else list(inputs))
        request = urllib.request.Request(
            self.host, data=body, method=self.method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise OSError(f"{self.method} {self.host} answered {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise OSError(f"{self.method} {self.host} failed: {exc}") from exc
