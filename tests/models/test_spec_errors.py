"""Model specs that name nothing answer at once (issue #25, first-hour stumbles): a path that
does not exist is named with the nearest folder that does; an ``owner/name`` that is neither
a local folder nor a hub model never waits on download retries; the message says how a hub id
is recognised. ``--text "a sentence"`` points to ``--prompt``."""
from __future__ import annotations

import time

import pytest

import interp
import interp.models.loading as loading
from interp.cli import main
from interp.errors import ModelLoadError


@pytest.fixture()
def no_download(monkeypatch):
    """Fail the test if anything tries to load through transformers (the slow path that
    retried downloads for ~30 s)."""
    def refuse(*args, **kwargs):
        raise AssertionError("load_hf_any was called for a spec that names nothing")

    monkeypatch.setattr(loading, "load_hf_any", refuse)


@pytest.fixture()
def hub(monkeypatch):
    """The hub as the test wants it: ``hub.answer`` is what :func:`hub_exists` says (True,
    False, None = unreachable); ``hub.calls`` counts the requests."""
    class Hub:
        answer: bool | None = None
        calls = 0

    state = Hub()

    def exists(repo_id, timeout=loading.HUB_CHECK_TIMEOUT):
        state.calls += 1
        return state.answer

    monkeypatch.setattr(loading, "hub_exists", exists)
    monkeypatch.setattr(loading, "hub_cached", lambda repo_id: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return state


def _load_error(spec: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as exc:
        interp.load_model(spec)
    return str(exc.value), time.perf_counter() - t0


def test_missing_owner_name_folder_offline_answers_at_once(tmp_path, monkeypatch, hub,
                                                           no_download):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg, seconds = _load_error("newcomer/tiny-gpt3")
    assert seconds < 2 and hub.calls == 0                      # no request when offline
    assert "no such folder or file: 'newcomer/tiny-gpt3'" in msg
    assert str(tmp_path / "newcomer" / "tiny-gpt3") in msg     # the path it looked at
    assert "HF_HUB_OFFLINE" in msg and "owner/name: exactly one '/'" in msg


@pytest.mark.parametrize("answer, why", [(None, "could not be reached"),
                                         (False, "has no model of that name")])
def test_missing_owner_name_folder_online_asks_the_hub_once(answer, why, tmp_path, monkeypatch,
                                                            hub, no_download):
    monkeypatch.chdir(tmp_path)
    hub.answer = answer
    msg, seconds = _load_error("newcomer/tiny-gpt3")
    assert hub.calls == 1 and seconds < 2
    assert "no such folder or file: 'newcomer/tiny-gpt3'" in msg and why in msg
    assert "hub id (owner/name" in msg


def test_a_hub_model_that_exists_is_still_loaded(monkeypatch, hub):
    hub.answer = True
    seen = []
    monkeypatch.setattr(loading, "load_hf_any", lambda spec, *a, **k: seen.append(spec) or
                        (_ for _ in ()).throw(ModelLoadError("stop here")))
    with pytest.raises(ModelLoadError, match="stop here"):
        interp.load_model("some-org/some-model")
    assert seen == ["some-org/some-model"]
    assert loading.resolve_spec("some-org/some-model") == "hub"


@pytest.mark.parametrize("spec", ["./newcomer/tiny-gpt3", "newcomer/tiny-gpt3/", "a/b/c",
                                  "~/no-such-interp-model", "model.gguf", "sub/model.gguf"])
def test_specs_written_as_paths_never_go_to_the_hub(spec, tmp_path, monkeypatch, hub,
                                                    no_download):
    monkeypatch.chdir(tmp_path)
    hub.answer = True                                 # even a hub that says yes is not asked
    msg, _ = _load_error(spec)
    assert hub.calls == 0
    assert msg.startswith(f"no such folder or file: {spec!r}") and "hub id" in msg


def test_a_near_miss_in_an_existing_folder_is_suggested(tmp_path, monkeypatch, hub,
                                                        no_download):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newcomer" / "tiny-gpt2").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg, _ = _load_error("newcomer/tiny-gpt3")
    assert f"the nearest folder that does is {tmp_path / 'newcomer'}" in msg
    assert "did you mean 'newcomer/tiny-gpt2'?" in msg


def test_unknown_plain_name_keeps_the_registry_hint(hub, no_download):
    msg, _ = _load_error("smollm")
    assert "Did you mean 'smollm2-135m'?" in msg and hub.calls == 0


def test_cli_missing_model_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys, hub,
                                                     no_download):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    assert main(["probe", "induction", "--model", "newcomer/tiny-gpt3"]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interp probe: error: no such folder or file")


@pytest.mark.parametrize("value", ["the cat sat on the mat", "hello"])
def test_text_flag_given_a_sentence_points_to_prompt(value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["probe", "induction", "--text", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--text takes a FILE" in err[0] and f'--prompt "{value}"' in err[0]


def test_text_flag_missing_file_with_a_suffix_keeps_the_file_error(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["probe", "induction", "--text", "notes.txt"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--prompt" not in err
