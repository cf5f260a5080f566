// Drives Debian's Chromium (through playwright-core) against the dashboard of a live run that
// writes checkpoints, and reads the pipelines table's checkpoint cell once it shows one.
// Saves a screenshot into OUTDIR. Prints one JSON line with what it saw; exits 1 when the
// cell never fills.
//
//   node checkpoint.mjs URL OUTDIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, outdir] = process.argv.slice(2);
if (!url || !outdir) {
  console.error("usage: node checkpoint.mjs URL OUTDIR");
  process.exit(2);
}
mkdirSync(outdir, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(60000);
const errors = [];
page.on("pageerror", e => errors.push(String(e)));
await page.goto(url);
const header = await page.locator("#pipelines thead th").last().textContent();
let cell = null;
try {
  const td = page.locator("#pipelines tbody tr td.checkpoint").first();
  await page.waitForFunction(() => {
    const c = document.querySelector("#pipelines tbody tr td.checkpoint");
    return c && / [kM]B\)/.test(c.textContent);
  }, null, { timeout: 60000 });
  cell = await td.textContent();
} catch (e) {
  errors.push(String(e));
}
await page.screenshot({ path: join(outdir, "dashboard-checkpoint.png"), fullPage: true });
console.log(JSON.stringify({ ok: cell != null && errors.length === 0, header, cell, errors }));
await browser.close();
process.exit(cell != null && errors.length === 0 ? 0 : 1);
