"""The app in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium; nothing is downloaded) opens the page, clicks each tab's button, waits for the
images and saves a screenshot of each tab. Set CARDIOFAIR_SCREENSHOTS=DIR to keep them."""

import os
import shutil
from pathlib import Path

import pytest

from app_server import NO_APP_EXTRA

pytest.importorskip("gradio", reason=NO_APP_EXTRA)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as shown  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no browser: install Debian's chromium and "
                                "chromium-driver (apt-get install chromium chromium-driver) to run the browser test")
# Drawing waits for the model on a busy CPU; a page that never shows its images fails after this.
WAIT_S = 120


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1500"):
        options.add_argument(argument)
    # The driver is named, so Selenium Manager never looks one up or downloads one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = Path(os.environ.get("CARDIOFAIR_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _loaded_images(driver, selector):
    """The images under ``selector`` that the browser has finished loading."""
    return [image for image in driver.find_elements(By.CSS_SELECTOR, f"{selector} img")
            if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)]


def _screenshot(driver, path):
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path))


def _open_tab(driver, name):
    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def test_each_tab_draws_in_the_browser(app_server, browser, screenshots):
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(app_server.url)
    wait.until(shown.element_to_be_clickable((By.ID, "draw-button"))).click()
    wait.until(lambda driver: _loaded_images(driver, "#drawn-ed") and _loaded_images(driver, "#drawn-es"))
    ed = _loaded_images(browser, "#drawn-ed")[0]
    assert browser.execute_script("return arguments[0].naturalWidth", ed) == 16
    prompt = browser.find_element(By.CSS_SELECTOR, "#drawn-prompt textarea").get_attribute("value")
    assert ", age in " in prompt
    drawn_with = browser.find_element(By.CSS_SELECTOR, "#drawn-with textarea").get_attribute("value")
    assert drawn_with.startswith("seed 0, ")
    _screenshot(browser, screenshots / "app-draw.png")

    _open_tab(browser, "Counterfactuals")
    wait.until(shown.element_to_be_clickable((By.ID, "sweep-button"))).click()
    wait.until(lambda driver: len(_loaded_images(driver, "#counterfactual-row")) == 2)
    _screenshot(browser, screenshots / "app-counterfactuals.png")

    _open_tab(browser, "Synthetic dataset")
    wait.until(lambda driver: len(_loaded_images(driver, "#privacy-view")) == 3)
    _screenshot(browser, screenshots / "app-synthetic.png")
