"""ilnp-forward and ilnp-connect: a wrong argument or a node that is not running is one
line on stderr and a non-zero exit (no root, no node)."""
import pytest

from tools import connect, forward


@pytest.mark.parametrize("argv, code, message", [
    (["serve", "80"], 2, "Missing option '--to'"),
    (["serve", "0", "--to", "127.0.0.1:80"], 2, "bad STP port '0'"),
    (["serve", "80", "--to", "nohostport"], 2, "expected HOST:PORT"),
    (["listen", "9080", "bob"], 2, "Missing argument"),
    (["listen", "99999", "bob", "80"], 2, "bad local port '99999'"),
    (["delete", "proxy", "80"], 2, "Invalid value for '{serve|listen}'"),
    (["list", "--run-dir", "/nonexistent/node"], 1, "node not running at /nonexistent/node"),
])
def test_forward_errors_are_one_line(capsys, argv, code, message):
    assert forward.run(argv) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ilnp-forward: ") and message in err


@pytest.mark.parametrize("argv, code, message", [
    (["bob"], 2, "Missing argument"),
    (["bob", "port"], 2, "bad STP port 'port'"),
    (["bad host", "22"], 2, "bad remote host"),
    (["bob", "22", "--run-dir", "/nonexistent/node"], 1, "node not running at /nonexistent/node"),
])
def test_connect_errors_are_one_line(capsys, argv, code, message):
    assert connect.run(argv) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ilnp-connect: ") and message in err
