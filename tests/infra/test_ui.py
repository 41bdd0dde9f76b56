"""The MLflow UI (`searchlab.infra.ui`), checked as a person would: a small search, `make ui`'s server, headless
Chromium.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); skipped without them.
The screenshots go to `tests/artifacts/ui-*.png` (ignored by git) for people to look at.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from searchlab import pipeline
from searchlab.config import compose
from searchlab.infra.tracking_server import free_port, serving
from searchlab.infra.ui import ui_command
from tests.conftest import new_store, require_system_package

pytestmark = [pytest.mark.ui, pytest.mark.slow]

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = Path(__file__).resolve().parents[1] / "artifacts"
# Without these Chromium stalls on this closed network (see the UI issue).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1600,1000"]
# Every plot the UI must list, from a search of two coarse candidates and a 2-point fine grid over one hyperparameter.
SEARCH = ("experiment=smoke", "dataset=synthetic", "dataset.n_samples=200", "model.epochs=3", "search.coarse.n_iter=2",
          "search.coarse.n_jobs=1", "search.fine.trial_worker=false", "search.coarse.paired.scaling=null",
          "search.fine.max_params=1",
          "tracking.log_model=false", "verbose=0", "search.fine.beyond_edges=false", "search.fine.confirm_top=0")


@pytest.fixture(scope="module")
def searched_in_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pipeline.SearchResult, str]]:
    """A search, and the UI over its store started exactly as `make ui` starts it, on 127.0.0.1 (its process
    group ended afterwards). The UI takes ~30 s to answer: the search runs meanwhile, in a thread."""
    require_system_package(CHROMIUM.exists() and DRIVER.exists(),
                           "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    store = new_store(tmp_path_factory.mktemp("ui-store"))
    outcome: dict[str, Any] = {}

    def search() -> None:
        try:
            outcome["result"] = pipeline.run(compose(*SEARCH, f"tracking.uri={store.uri}"))
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=search)
    thread.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with serving(ui_command(store.uri, port=port), url, output=subprocess.DEVNULL):
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            yield outcome["result"], url
    finally:
        thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    require_system_package(CHROMIUM.exists() and DRIVER.exists(),
                           "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"the UI never showed {what}"
        time.sleep(0.5)


def test_run_tree_and_plots_in_the_browser(searched_in_ui: tuple[pipeline.SearchResult, str], browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    result, ui_url = searched_in_ui
    SHOTS.mkdir(exist_ok=True)
    driver.get(f"{ui_url}/#/experiments/{result.experiment_id}/runs")  # type: ignore[attr-defined]
    body = lambda: driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]  # noqa: E731
    _wait_for(lambda: f"search {result.data.name}" in body(), "the search run")
    _wait_for(lambda: "searchlab" in body(), "the experiment's name")

    def expand(run_id: str) -> None:
        button = f"//div[@row-id='{run_id}']//button[contains(@data-component-id, 'runnamecellrenderer')]"
        driver.find_element(By.XPATH, button).click()  # type: ignore[attr-defined]

    expand(result.run_id)
    _wait_for(lambda: "coarse" in body() and "fine" in body(), "the stage runs")
    for stage in ("coarse", "fine"):
        row = driver.find_element(  # type: ignore[attr-defined]
            By.XPATH, f"//span[normalize-space(text())='{stage}']/ancestor::div[@row-id][1]")
        expand(row.get_attribute("row-id"))
    _wait_for(lambda: "coarse-000" in body() and "coarse-winner" in body(), "the trial runs")
    driver.save_screenshot(str(SHOTS / "ui-run-tree.png"))  # type: ignore[attr-defined]

    driver.get(f"{ui_url}/#/experiments/{result.experiment_id}/runs/{result.run_id}/artifacts")  # type: ignore[attr-defined]
    _wait_for(lambda: "plots" in body() and "config.yaml" in body(), "the search run's artifacts")
    driver.find_element(By.XPATH, "//*[normalize-space(text())='plots']").click()  # type: ignore[attr-defined]
    for name in ("learning_curves.png", "influence.png", "coarse_scores_vs_params.png", "parallel_coarse.png",
                 "confusion_matrix_test.png"):
        _wait_for(lambda name=name: name in body(), name)  # type: ignore[misc]
    driver.find_element(By.XPATH, "//*[normalize-space(text())='coarse_scores_vs_params.png']").click()  # type: ignore[attr-defined]
    time.sleep(3)  # let the image render for the screenshot
    driver.save_screenshot(str(SHOTS / "ui-artifacts.png"))  # type: ignore[attr-defined]
    assert (SHOTS / "ui-artifacts.png").stat().st_size > 20_000
