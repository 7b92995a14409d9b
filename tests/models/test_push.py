"""`alignkit push`: a trained model, its card and its config to a hub model repository — against a local stand-in for
the hub's HTTP API (HF_ENDPOINT), never the network."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignkit.cli import main
from alignkit.models.push import PushError, push_model


class FakeHub:
    """The three calls an upload makes — create the repo, ask how each file is uploaded (here: inline), commit —
    kept in memory: repos[repo][path] = bytes."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.private: dict[str, bool] = {}
        self.messages: list[str] = []
        self.validated: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == ["api", "repos", "create"]:
                    request = json.loads(body)
                    repo = f"{request['organization']}/{request['name']}" if request.get("organization") else \
                        request["name"]
                    hub.repos.setdefault(repo, {})
                    hub.private[repo] = request.get("visibility") == "private"
                    return self._reply(200, {"url": f"{hub.endpoint}/{repo}"})
                if parts == ["api", "validate-yaml"]:  # the model card's front matter, checked before a commit
                    import yaml

                    request = json.loads(body)
                    hub.validated.append(request["repoType"])
                    content = request["content"]
                    front = yaml.safe_load(content.split("---\n")[1]) if content.startswith("---\n") else None
                    ok = isinstance(front, dict) and isinstance(front.get("tags", []), list)
                    return self._reply(200 if ok else 400, {"warnings": []} if ok else {"error": "invalid metadata"})
                if len(parts) >= 5 and parts[:2] == ["api", "models"]:
                    repo = f"{parts[2]}/{parts[3]}"
                    if repo not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"})
                    if parts[4] == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                            "shouldIgnore": False} for f in files]})
                    if parts[4] == "commit":
                        for line in body.decode().splitlines():
                            item = json.loads(line)
                            if item["key"] == "header":
                                hub.messages.append(item["value"]["summary"])
                            elif item["key"] == "file":
                                hub.repos[repo][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        return self._reply(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/1", "commitOid": "1" * 40,
                                                 "pullRequestUrl": None})
                return self._reply(404, {"error": f"not served here: {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as constants

    fake = FakeHub()
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_for_the_stand_in")
    # The suite runs offline (make test sets HF_HUB_OFFLINE=1, which the hub client reads once, at import); the
    # stand-in is local, so pushing to it is allowed.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield fake
    fake.server.shutdown()


def _api(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token="hf_test_token_for_the_stand_in")


def test_push_uploads_the_model_its_card_and_the_config_that_trained_it(tiny_dir, tmp_path, hub, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)))
    run = tmp_path / "run"
    assert main(["sft", f"model={tiny_dir}", f"data.train={data}", f"output_dir={run}", "max_steps=1",
                 "progress=false"]) == 0
    pushed = push_model(run / "final", "me/tiny-sft", private=True, api=_api(hub))
    stored = hub.repos["me/tiny-sft"]
    assert set(stored) == set(pushed.files) and hub.private["me/tiny-sft"]
    for name in ("model.safetensors", "config.json", "README.md", "tokenizer.json"):
        assert stored[name] == (run / "final" / name).read_bytes(), name
    assert stored["alignkit_config.yaml"] == (run / "config.yaml").read_bytes()
    assert hub.messages == ["alignkit: upload run/final"] and hub.validated == ["model"]


def test_push_refuses_what_is_not_a_model_before_asking_the_hub(tmp_path, hub):
    with pytest.raises(PushError, match="not a model folder"):
        push_model(tmp_path, "me/x", api=_api(hub))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PushError, match="no weights"):
        push_model(tmp_path, "me/x", api=_api(hub))
    (tmp_path / "model.safetensors").write_bytes(b"0")
    with pytest.raises(PushError, match="expected OWNER/NAME"):
        push_model(tmp_path, "no-owner", api=_api(hub))
    assert hub.repos == {}


def test_push_command_says_what_it_pushed_and_refuses_offline(tiny_dir, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    assert main(["push", tiny_dir, "me/tiny"]) == 0
    out = capsys.readouterr().out
    assert "to " + hub.endpoint + "/me/tiny" in out and "model.safetensors" in hub.repos["me/tiny"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", tiny_dir, "me/tiny"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
