"""`make screenshots`: the README's pictures of the console, taken from a real run.

A real `mlflow server` in a temporary directory, a local receiver that turns one webhook away
(404) and answers the other, a few models promoted through their stages, the daemon serving the
console; then headless Chromium logs in and saves the overview, the deliveries page and a dead
delivery as docs/img/console-*.png.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
import warnings
from pathlib import Path

from tests.e2e.browser import Console, launched
from tests.e2e.harness import (
    Daemon,
    MlflowServer,
    Receiver,
    ReceiverBehaviour,
    wait_for,
    watcher_env,
)
from tests.helpers import free_port

warnings.filterwarnings("ignore", category=FutureWarning)  # MLflow deprecates stages

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"
MODELS = ("fraud-model", "churn-model", "ranking-model")
TOKEN = secrets.token_urlsafe(24)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        work = Path(tmp)
        server = MlflowServer(work / "mlflow")
        receiver = Receiver()
        server.start()
        receiver.start()
        receiver.choose = lambda path: (
            ReceiverBehaviour(status=404, body=b"No job named deploy-ranking on this Jenkins")
            if path.endswith("/jenkins")
            else ReceiverBehaviour()
        )
        try:
            shoot(work, server, receiver)
        finally:
            receiver.stop()
            server.stop()
    print(f"wrote {', '.join(sorted(p.name for p in OUT.glob('console-*.png')))}")
    return 0


def shoot(work: Path, server: MlflowServer, receiver: Receiver) -> None:
    port = free_port()
    config = work / "watcher.toml"
    config.write_text(
        f'[mlflow]\ntracking_uri = "{server.url}"\n[watch]\ninterval = "1s"\n'
        f'[state]\npath = "{work / "state.db"}"\n'
        f'[console]\nlisten = "127.0.0.1:{port}"\ntoken_env = "SHOTS_TOKEN"\n'
        f'[[webhooks]]\nname = "github-actions"\nurl = "{receiver.base_url}/github"\n'
        'secret_env = "E2E_SECRET"\n'
        f'[[webhooks]]\nname = "jenkins"\nurl = "{receiver.base_url}/jenkins"\n'
        'events = ["MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"]\n'
    )
    client = server.client()
    with Daemon(config, watcher_env({"SHOTS_TOKEN": TOKEN})) as daemon:
        daemon.wait_started()
        daemon.wait_polls(1)
        for name in MODELS:
            client.create_registered_model(name)
            for version in ("1", "2"):
                client.create_model_version(name, f"s3://models/{name}/{version}")
                client.transition_model_version_stage(name, version, "Staging")
                time.sleep(0.3)
            client.transition_model_version_stage(name, "2", "Production")
        # Per model: three stage changes to github-actions, the move to Production to jenkins.
        wait_for(lambda: len(receiver.deliveries()) >= 4 * len(MODELS), 60, "the deliveries", 0.2)
        daemon.wait_polls(2)
        with launched() as browser:
            console = Console(browser, f"http://127.0.0.1:{port}")
            console.page.set_viewport_size({"width": 1280, "height": 860})
            console.login_with_token(TOKEN)
            OUT.mkdir(exist_ok=True)
            console.open("/")
            console.page.screenshot(path=str(OUT / "console-overview.png"), full_page=True)
            console.open("/deliveries")
            console.page.screenshot(path=str(OUT / "console-deliveries.png"), full_page=True)
            console.open("/deliveries?status=dead")
            console.page.click("#deliveries a.delivery")
            console.page.wait_for_load_state()
            console.page.screenshot(path=str(OUT / "console-delivery.png"), full_page=True)
            console.close()


if __name__ == "__main__":
    sys.exit(main())
