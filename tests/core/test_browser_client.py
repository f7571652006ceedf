"""The browser client in Debian's headless Chromium, its microphone a WAV of espeak-ng speech
(Chromium's fake capture device plays it in a loop): the page connects hands-free, the
transcript appears, the reply's audio arrives and plays, and the person speaking again
over the answer stops the playback. Core runs on a real morgan-vad and the echo models
(an LLM that streams a word every 0.25 s, a TTS whose audio lasts 0.1 s a character)."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import soxr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.core.audio_samples import espeak_wav
from tests.core.conftest import ApiKeys
from tests.core.servers import CoreServer, ModelInstance, echo_instance, started, vad_instance
from tests.harness.servers import ConsulServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

VAD = "test-vad-browser"
LLM = "test-echo-llm-browser"
TTS = "test-echo-tts-browser"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser_models(
    consul_server: ConsulServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelInstance]]:
    logs = tmp_path_factory.mktemp("browser-models")
    instances = {
        "vad": vad_instance(VAD, consul_server.addr, logs),
        "llm": echo_instance(LLM, consul_server.addr, logs, word_delay_s=0.25),
        "tts": echo_instance(TTS, consul_server.addr, logs, speech_ms_per_char=100),
    }
    with started(instances):
        yield instances


@pytest.fixture(scope="module")
def core_overrides(browser_models: dict[str, ModelInstance]) -> dict[str, Any]:
    return {"vad_service": VAD, "llm_service": LLM, "tts_service": TTS}


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone says, over and over: a sentence, then 2.5 s of quiet."""
    folder = tmp_path_factory.mktemp("microphone")
    data, rate = soundfile.read(
        io.BytesIO(espeak_wav("Hello Morgan, what time is it?", folder / "speech.wav")),
        dtype="float32",
    )
    speech = np.asarray(soxr.resample(data, rate, 16000), dtype=np.float32)
    pcm = np.concatenate([speech, np.zeros(40000, np.float32)])
    path = folder / "microphone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def chromium(microphone: Path) -> webdriver.Chrome:
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), (
        "Debian's chromium and chromium-driver are missing; scripts/setup installs them"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--window-size=1200,800",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


async def wait_for_stats(
    driver: webdriver.Chrome, ready: Any, what: str, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(driver.execute_script, "return window.morgan")
        if stats and ready(stats):
            return stats
        await asyncio.sleep(0.5)
    logs = await asyncio.to_thread(driver.get_log, "browser")
    raise AssertionError(f"{what} within {timeout} s: {stats}; console: {logs}")


async def test_hands_free_in_the_browser_hears_answers_and_is_interrupted(
    core: CoreServer, api_keys: ApiKeys, microphone_wav: Path, tmp_path: Path
) -> None:
    driver = await asyncio.to_thread(chromium, microphone_wav)
    try:
        await asyncio.to_thread(driver.get, core.url + "/")
        title = await asyncio.to_thread(lambda: driver.title)
        assert title == "Morgan"
        key = await asyncio.to_thread(driver.find_element, By.ID, "key")
        await asyncio.to_thread(key.send_keys, api_keys.alice)
        button = await asyncio.to_thread(driver.find_element, By.ID, "connect-button")
        await asyncio.to_thread(button.click)

        heard = await wait_for_stats(
            driver, lambda s: s["transcripts"] and s["audioStarted"], "a transcript and audio"
        )
        assert heard["transcripts"][0].startswith("audio of "), heard
        assert heard["audioReceived"] >= 1
        stopped = await wait_for_stats(
            driver,
            lambda s: s["interruptions"] and s["audioStopped"],
            "speaking over the answer stopped its playback",
        )
        assert not stopped["errors"], stopped["errors"]
        turns = await asyncio.to_thread(
            driver.find_elements, By.CSS_SELECTOR, "#turns li.assistant.interrupted"
        )
        assert turns, "the interrupted answer is not marked on the page"
        user = await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, "#turns li.user")
        assert (await asyncio.to_thread(lambda: user[0].text)).startswith("audio of ")
        await wait_for_stats(driver, lambda s: s["conversations"], "the conversation listed")
        await asyncio.to_thread(driver.save_screenshot, str(tmp_path / "browser-client.png"))
    finally:
        await asyncio.to_thread(driver.quit)


async def test_the_page_and_its_files_need_no_key_and_name_their_policy(
    core: CoreServer,
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=core.url) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "<title>Morgan</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for name in ("app.js", "pcm-worklet.js", "style.css"):
            assert (await client.get(f"/client/{name}")).status_code == 200, name
        assert (await client.get("/client/../config.py")).status_code == 404
        assert (await client.get("/client/nope.js")).status_code == 404
        assert (await client.get("/api/conversations")).status_code == 401
