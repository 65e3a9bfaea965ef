"""Running a command's ``main`` in-process, and the one-line error every command promises."""

from __future__ import annotations

from tilt.cli.compare import main as compare_main


def run_command(argv, capsys, main=compare_main):
    """Call ``main(argv)``; argparse errors exit through SystemExit, library errors return 2."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *fragments):
    """Exit status 2, nothing on stdout, one line on stderr naming each fragment."""
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "error:" in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
