"""Child process of ``verify_bundle``: runs a bundle's runner.py CLI as a user would, in a clean
interpreter, and reports its exit code, output and which watched modules it loaded.

Run as ``python -I verify_probe.py BUNDLE INPUT.json MODULE,MODULE...`` from the bundle folder.
"""
import contextlib
import io
import json
import runpy
import sys


def main(bundle, inputs, watched):
    sys.argv = ["runner.py", bundle, inputs]
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path("runner.py", run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    loaded = sorted(m for m in watched if m in sys.modules)
    print(json.dumps({"exit": code, "stdout": out.getvalue(), "modules_loaded": loaded, "executable": sys.executable}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
