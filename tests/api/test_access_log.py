"""`reangle serve` writes uvicorn's access lines through PlainAccessFormatter: the very lines uvicorn's own
AccessFormatter writes, with or without colours, except that a download link's signature is redacted."""

from __future__ import annotations

import logging
import logging.config
import re

import pytest
from uvicorn.logging import AccessFormatter

from reangle.api.access_log import ACCESS_FORMAT, PlainAccessFormatter, log_config
from reangle.cli.serve import server_logging

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


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/v1/files/a?expires=1&%73ig=abc", "/v1/files/a?expires=1&%73ig=[redacted]"),
        ("/v1/files/a?%73%69%67=abc&x=1", "/v1/files/a?%73%69%67=[redacted]&x=1"),
        ("/v1/files/a?sig=abc&sig=def", "/v1/files/a?sig=[redacted]&sig=[redacted]"),
        ("/v1/files/a?design=abc", "/v1/files/a?design=abc"),  # only the parameter named sig
    ],
)
def test_a_signature_is_redacted_however_its_name_is_written(path: str, shown: str) -> None:
    """The server decodes `%73ig` to `sig`: a link so written works, so its signature must not be logged."""
    line = PlainAccessFormatter(fmt=ACCESS_FORMAT, use_colors=False).format(
        access_record(("127.0.0.1:1", "GET", path, "1.1", 200))
    )
    assert f'"GET {shown} HTTP/1.1"' in line


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
    record = access_record(REQUESTS[0])
    assert formatter.format(record) == (
        f"{formatter.formatTime(record)} "
        'INFO:     127.0.0.1:50312 - "GET /v1/jobs/job_0123456789abcdef01234567 HTTP/1.1" 200 OK'
    )
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["access"]


@pytest.mark.parametrize("use_colors", [False, True])
def test_serve_access_lines_carry_the_timestamp_of_its_own_log_lines(use_colors: bool) -> None:
    """A request's line and the lines of the job it made can be matched by time: the same clock format."""
    config = server_logging()
    configure = logging.config.DictConfigurator(config).configure_formatter
    access = configure(config["formatters"]["access"] | {"use_colors": use_colors})
    reangle = configure(config["formatters"]["reangle"])
    request = access_record(REQUESTS[2])
    job = logging.LogRecord("reangle.runner", logging.INFO, __file__, 1, "job started", None, None)
    request.created, request.msecs = job.created, job.msecs = 1_780_000_000.25, 250.0
    stamp = reangle.format(job).removesuffix(" INFO reangle.runner: job started")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,250", stamp)
    line = access.format(request)
    assert line.startswith(f"{stamp} ")
    assert "sig=[redacted]&x=1" in line
    assert "%22ab%22" not in line
