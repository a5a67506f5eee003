"""CI's check of the README's first command: `python3 studio/bootstrap.py launch` installs and serves the page,
and a picture and a text come back from the embedded default models (fetched on first use into the empty
cache that .ci/run made). Standard library only for the launch; the API is asked with the venv's gradio_client.
Stops the studio it started, whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 3600  # a fresh machine installs torch and compiles llama.cpp before the page is up

ASK = """
import sys
from gradio_client import Client
client = Client(sys.argv[1], verbose=False)
info, pictures = client.predict(prompt="red heart", steps=8, seed=1, api_name="/generate_image")
assert len(pictures) == 1, pictures
text, status = client.predict(prompt="Once upon a time", max_new_tokens=8, seed=1, api_name="/generate_text")
assert text.strip(), status
print("ci: the embedded defaults answered: a picture and", repr(text[:40]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    studio = subprocess.Popen([sys.executable, "studio/bootstrap.py", "launch", "--port", str(port)], cwd=ROOT,
                              start_new_session=True)
    try:
        deadline = time.time() + DEADLINE_S
        while True:
            if studio.poll() is not None:
                print(f"ci: the launch command ended (exit {studio.returncode}) before serving {url}", file=sys.stderr)
                return 1
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    page = answer.read().decode("utf-8", "replace")
                break
            except OSError:
                if time.time() > deadline:
                    print(f"ci: nothing served at {url} after {DEADLINE_S} s", file=sys.stderr)
                    return 1
                time.sleep(2)
        if "gradio" not in page.lower():
            print(f"ci: {url} answered, but not with the studio's page", file=sys.stderr)
            return 1
        python = ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        return subprocess.run([str(python), "-c", ASK, url], timeout=900).returncode
    finally:
        try:
            os.killpg(studio.pid, signal.SIGTERM)
            studio.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(studio.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
