"""uvicorn's access log, the same lines for less CPU.

uvicorn's AccessFormatter copies every log record twice and looks the status phrase up through the
HTTPStatus enum: about a tenth of the server's CPU on a status read. PlainAccessFormatter writes the same
line for uvicorn's own access format without colours (the case of a log sent to a file or a collector), and
leaves every other case to uvicorn. Either way the `sig` of a download link is redacted: the log must not
hand out working links to whoever reads it.

`reangle serve` writes each access line after a timestamp (TIMED_ACCESS_FORMAT), as its own log lines have,
so that requests can be matched with the jobs they made.
"""

from __future__ import annotations

import copy
import http
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import AccessFormatter

ACCESS_FORMAT: str = LOGGING_CONFIG["formatters"]["access"]["fmt"]
TIMED_ACCESS_FORMAT = f"%(asctime)s {ACCESS_FORMAT}"
_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}
#: The value of a `sig` parameter, its name plain or percent-encoded (`%73ig`, which the server decodes).
_SIGNATURE = re.compile(r"(?<=[?&])((?:s|%73)(?:i|%69)(?:g|%67)=)[^&]*")
REDACTED = "[redacted]"


class PlainAccessFormatter(AccessFormatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record = without_signature(record)
        match record.args:
            case (client_addr, method, full_path, http_version, int(status)) if (
                not self.use_colors and self._fmt in (ACCESS_FORMAT, TIMED_ACCESS_FORMAT)
            ):
                level = record.levelname
                line = (
                    f'{level}:{" " * (8 - len(level))} {client_addr} - "{method} {full_path} '
                    f'HTTP/{http_version}" {status} {_PHRASES.get(status, "")}'
                )
                # format() set asctime, as it does for any format that uses it
                return line if self._fmt == ACCESS_FORMAT else f"{record.asctime} {line}"
        return super().formatMessage(record)


def without_signature(record: logging.LogRecord) -> logging.LogRecord:
    """The record, or a copy whose path has its download signature redacted."""
    match record.args:
        case (client_addr, method, str(full_path), http_version, status) if "=" in full_path:
            shown = _SIGNATURE.sub(rf"\g<1>{REDACTED}", full_path)
            if shown != full_path:
                redacted = copy.copy(record)
                redacted.args = (client_addr, method, shown, http_version, status)
                return redacted
    return record


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, its access lines timestamped and formatted by
    PlainAccessFormatter."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"]["()"] = f"{__name__}.{PlainAccessFormatter.__name__}"
    config["formatters"]["access"]["fmt"] = TIMED_ACCESS_FORMAT
    return config
