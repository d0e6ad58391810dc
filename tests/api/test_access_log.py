"""`reangle serve` writes uvicorn's access lines through PlainAccessFormatter: the very lines uvicorn's own
AccessFormatter writes, with or without colours, except that a download link's signature is redacted."""

from __future__ import annotations

import logging
import logging.config

import pytest
from uvicorn.logging import AccessFormatter

from reangle.api.access_log import ACCESS_FORMAT, PlainAccessFormatter, log_config

# (client address, method, path with query, HTTP version, status), as uvicorn logs a request
REQUESTS = [
    ("127.0.0.1:50312", "GET", "/v1/jobs/job_0123456789abcdef01234567", "1.1", 200),
    ("[::1]:8080", "POST", "/v1/jobs?wait=30", "1.1", 202),
    ("10.0.0.7:1234", "GET", "/v1/files/asset_x?expires=1&sig=%22ab%22&x=1", "1.0", 404),
    ("10.0.0.7:1234", "DELETE", "/v1/jobs", "2", 599),  # no phrase for this status
]


def access_record(args: tuple[object, ...], level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", level, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)


@pytest.mark.parametrize("args", REQUESTS)
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
@pytest.mark.parametrize("use_colors", [False, True])
def test_each_line_is_the_one_uvicorn_writes(args: tuple[object, ...], level: int, use_colors: bool) -> None:
    ours = PlainAccessFormatter(fmt=ACCESS_FORMAT, use_colors=use_colors).format(access_record(args, level))
    path = str(args[2]).replace("sig=%22ab%22", "sig=[redacted]")
    redacted = (*args[:2], path, *args[3:])
    theirs = AccessFormatter(fmt=ACCESS_FORMAT, use_colors=use_colors).format(access_record(redacted, level))
    assert ours == theirs
    assert path in ours
    assert "%22ab%22" not in ours


def test_another_format_is_left_to_uvicorn() -> None:
    fmt = "%(client_addr)s %(status_code)s %(levelname)s"
    record = access_record(REQUESTS[0])
    ours = PlainAccessFormatter(fmt=fmt, use_colors=False).format(record)
    assert ours == AccessFormatter(fmt=fmt, use_colors=False).format(access_record(REQUESTS[0]))
    assert ours == "127.0.0.1:50312 200 OK INFO"


def test_the_serve_log_config_formats_access_lines_with_it() -> None:
    config = log_config()
    formatter = logging.config.DictConfigurator(config).configure_formatter(config["formatters"]["access"])
    assert isinstance(formatter, PlainAccessFormatter)
    assert formatter.format(access_record(REQUESTS[0])) == (
        'INFO:     127.0.0.1:50312 - "GET /v1/jobs/job_0123456789abcdef01234567 HTTP/1.1" 200 OK'
    )
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["access"]
