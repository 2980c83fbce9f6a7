"""`galip-bench <command> --help`: every option of every command has a help text, and each says its default once
(argparse's ArgumentDefaultsHelpFormatter appends `(default: X)` even where the text already says it, and
`(default: None)` / `(default: False)` where there is nothing to say)."""
import argparse
import re

import pytest

from galip_bench.cli import COMMANDS, HelpFormatter, build_parser, main

NOTHING = re.compile(r"\(default: (None|False|\[\]|)\)")


def subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def options(p):
    return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def defaults_said(text: str) -> int:
    """How often a help text says a default: `default:` or `default ` (not a default *value* named default)."""
    return len(re.findall(r"\bdefault[: ]", text, re.IGNORECASE))


def test_every_option_of_every_command_has_help():
    parsers = subparsers()
    assert set(parsers) == set(COMMANDS)
    missing = [f"{name} {a.option_strings[-1]}" for name, p in parsers.items() for a in options(p)
               if not (a.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("formatter, clean", [(HelpFormatter, True), (argparse.ArgumentDefaultsHelpFormatter, False)])
def test_each_option_says_its_default_once(formatter, clean):
    """HelpFormatter adds `(default: X)` only to a help that does not mention its default and whose default is
    something; argparse's own formatter (the negative control) repeats it and prints `(default: None)`."""
    repeated, empty = [], []
    for name, p in subparsers().items():
        for action in options(p):
            shown = formatter(name)._expand_help(action) if action.help else ""
            written = action.help or ""
            if defaults_said(shown) > max(defaults_said(written), 1):
                repeated.append(f"{name} {action.option_strings[-1]}: {shown}")
            if NOTHING.search(shown):
                empty.append(f"{name} {action.option_strings[-1]}: {shown}")
    assert (repeated == [] and empty == []) is clean, (repeated, empty)
    if clean:
        eval_parser = subparsers()["eval"]
        by = {a.dest: a for a in options(eval_parser)}
        assert HelpFormatter("eval")._expand_help(by["seed"]).endswith("(default: 0)")  # 0 is a default to say
        assert HelpFormatter("eval")._expand_help(by["batch"]) == "generation batch size (default 64)"


def test_rendered_help_shows_the_filled_texts(capsys):
    for command, option, text in (("speed", "--device", "where to run: auto"),
                                  ("train", "--set", "override for the run"), ("eval", "--set", "model override")):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"{option} " in out and text in out, (command, out)
        assert not NOTHING.search(out)
