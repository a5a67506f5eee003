"""`studio`'s command line: the parser (built from one function per subcommand) reads each subcommand's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.cli import SUBCOMMANDS, build_parser


def test_every_subcommand_is_there_in_order():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert tuple(sub.choices) == SUBCOMMANDS


def test_each_subcommand_reads_its_own_flags_and_the_common_ones():
    parse = build_parser().parse_args
    launch = parse(["launch", "--port", "0", "--auth", "a:b", "--auth", "c:d", "--ray", "--no-watermark",
                    "--public", "--device", "cpu"])
    assert (launch.port, launch.auth, launch.ray, launch.watermark, launch.behind_proxy, launch.device) == (
        0, ["a:b", "c:d"], "local", False, True, "cpu")
    assert parse(["launch"]).ray is None and parse(["launch", "--ray", "head:6379"]).ray == "head:6379"
    text = parse(["text", "hello", "--top-p", "0.5", "--stop", "x", "--stop", "y", "--mode", "chat"])
    assert (text.prompt, text.top_p, text.stop, text.mode, text.max_new_tokens) == (
        "hello", 0.5, ["x", "y"], "chat", 256)
    train = parse(["train", "emoji", "--tiny", "--out", "o"])
    assert (train.what, train.tiny, train.out, train.epochs) == ("emoji", True, Path("o"), 15)
    assert parse(["fetch", "a", "b", "--offline"]).names == ["a", "b"]
    keys = parse(["keys", "add", "bob", "--guest", "--outputs", "out"])
    assert (keys.keys_command, keys.name, keys.guest, keys.outputs) == ("add", "bob", True, Path("out"))
    with pytest.raises(SystemExit):
        parse(["train", "cats"])
