// Opens snapgate's /upload page in Debian's headless chromium (playwright-core, no browser
// download), uploads VIDEO with the page's own form, and waits until the thumbnails are shown.
// Usage: node upload.mjs BASE_URL VIDEO SCREENSHOT. Prints one JSON line with what it saw.
import { chromium } from "playwright-core";

const [base, video, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const seen = { states: [], progress: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  page.on("console", (m) => console.error("[page]", m.text()));
  await page.goto(base + "/upload");
  await page.waitForSelector("#preset option", { state: "attached" });
  await page.setInputFiles("#file", video);
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("progress").value === 100, null, { timeout: 60000 });
  await page.waitForSelector("#thumbs img.thumb", { timeout: 180000 });
  // Every thumbnail really loaded (decoded by the browser, not only an <img> tag).
  await page.waitForFunction(
    () => [...document.querySelectorAll("#thumbs img, #sprites img")].every((i) => i.complete && i.naturalWidth > 0),
    null,
    { timeout: 60000 },
  );
  await page.waitForFunction(() => Number(document.getElementById("scrub").dataset.cues || 0) > 0, null, { timeout: 60000 });
  // Hover the scrub bar: the storyboard preview shows a sprite cell.
  const bar = await page.locator("#scrub").boundingBox();
  await page.mouse.move(bar.x + bar.width * 0.5, bar.y + bar.height / 2);
  const preview = await page.evaluate(() => {
    const p = document.getElementById("preview");
    return { display: p.style.display, image: p.style.backgroundImage, width: p.style.width };
  });
  seen.state = await page.textContent("#state");
  seen.thumbs = await page.$$eval("#thumbs img", (xs) => xs.map((i) => ({ src: i.src, w: i.naturalWidth, h: i.naturalHeight })));
  seen.sprites = await page.$$eval("#sprites img", (xs) => xs.map((i) => ({ src: i.src, w: i.naturalWidth, h: i.naturalHeight })));
  seen.cues = Number(await page.getAttribute("#scrub", "data-cues"));
  seen.preview = preview;
  seen.log = await page.textContent("#log");
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  seen.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
