// Drives Debian's Chromium (through playwright-core, no downloaded browser) against a live
// streamgauge dashboard and checks, through the page itself, that:
//   1. the overview's counters move,
//   2. an outlier appears in the outlier table, and clicking it opens its series; the top-k table
//      is filled,
//   3. series charts receive points, and a live series keeps receiving them over the event stream,
//   4. a sensor in an outage shows in the silent view (clicking it opens its series) and leaves
//      it when it reports again,
//   5. the sessions view lists the live sensors' spikes as excursions over 40.
// Saves screenshots into OUTDIR. Prints one JSON line with what it saw; exits 1 on a failed check.
//
//   node check.mjs URL OUTDIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [url, outdir] = process.argv.slice(2);
if (!url || !outdir) {
  console.error("usage: node check.mjs URL OUTDIR");
  process.exit(2);
}
mkdirSync(outdir, { recursive: true });
const seen = {};
const fail = async (browser, page, why) => {
  try { await page.screenshot({ path: join(outdir, "failure.png"), fullPage: true, timeout: 90000 }); } catch (e) { /* best effort */ }
  console.log(JSON.stringify({ ok: false, why, seen }));
  await browser.close();
  process.exit(1);
};

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
await page.goto(url, { waitUntil: "load" });
if (!(await page.evaluate(() => typeof Plotly === "object"))) await fail(browser, page, "Plotly.js did not load from the binary");

const count = async sel => Number((await page.textContent(sel)).replace(/[^0-9]/g, "") || 0);
try {
  // 1. Counters move.
  await page.waitForFunction(() => Number(document.getElementById("total-in").textContent.replace(/[^0-9]/g, "")) > 0, null, { timeout: 30000 });
  seen.counter0 = await count("#total-in");
  await page.waitForFunction(n => Number(document.getElementById("total-in").textContent.replace(/[^0-9]/g, "")) > n, seen.counter0, { timeout: 30000 });
  seen.counter1 = await count("#total-in");

  // 4a. A sensor in an outage goes silent (the demo's first outage starts 20 s in, the TTL is
  //     10 s); clicking its row opens its series.
  await page.click('nav button[data-view="silent"]');
  seen.silent = await (await page.waitForFunction(() => {
    const tr = document.querySelector('#silent tbody tr[data-key^="sensor/"]');
    return tr ? tr.dataset.key : null;
  }, null, { timeout: 90000 })).jsonValue();
  seen.silentCount = await count("#total-silent");
  seen.silentSince = await page.textContent(`#silent tbody tr[data-key="${seen.silent}"] td:nth-child(4)`);
  await page.screenshot({ path: join(outdir, "dashboard-silent.png"), fullPage: true, timeout: 90000 });
  await page.click(`#silent tbody tr[data-key="${seen.silent}"]`);
  await page.waitForFunction(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d && d.data && d.data[3].x.length > 0;
  }, seen.silent, { timeout: 30000 });
  // Its chart says it is silent.
  seen.silentBadge = await page.evaluate(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d.parentElement.querySelector(".silent-badge").textContent;
  }, seen.silent);

  // 2. An outlier appears; clicking its row opens its chart.
  await page.click('nav button[data-view="outliers"]');
  await page.waitForFunction(() => document.querySelectorAll("#outliers tbody tr:not(.leave)").length > 0, null, { timeout: 60000 });
  seen.outlierRows = await page.locator("#outliers tbody tr").count();
  await page.waitForFunction(() => document.querySelectorAll("#top tbody tr").length > 0, null, { timeout: 30000 });
  seen.topRows = await page.locator("#top tbody tr").count();
  seen.topScores = await page.evaluate(() => [...document.querySelectorAll("#top tbody tr td:nth-child(3)")].map(td => Number(td.textContent)));
  seen.changes = await page.locator("#changes div").count();
  // The table changes under us (rows enter and leave): pick and click one row in one step.
  seen.outlier = await (await page.waitForFunction(() => {
    const tr = document.querySelector("#outliers tbody tr:not(.leave)");
    if (!tr) return null;
    tr.click();
    return tr.dataset.key;
  }, null, { timeout: 60000 })).jsonValue();
  const chartPoints = key => page.evaluate(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d && d.data ? d.data[3].x.length : -1;
  }, key);
  await page.waitForFunction(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d && d.data && d.data[3].x.length > 0;
  }, seen.outlier, { timeout: 30000 });
  seen.outlierChartPoints = await chartPoints(seen.outlier);

  // 3. A live series (the generator's sensors) keeps receiving points over the event stream.
  await page.fill("#series-search", "sensor/");
  await page.waitForSelector('#series-list li[data-key^="sensor/"]', { timeout: 30000 });
  const live = await (await page.waitForFunction(() => {
    const li = document.querySelector('#series-list li[data-key^="sensor/"]');
    if (!li) return null;
    li.click();
    return li.dataset.key;
  }, null, { timeout: 30000 })).jsonValue();
  await page.waitForFunction(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d && d.data && d.data[3].x.length > 0;
  }, live, { timeout: 30000 });
  seen.live = live;
  seen.livePoints0 = await chartPoints(live);
  const lastTs = k => page.evaluate(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    const x = d.data[3].x;
    return new Date(x[x.length - 1]).getTime();
  }, k);
  seen.liveTs0 = await lastTs(live);
  await page.waitForFunction(([k, t]) => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    const x = d.data[3].x;
    return new Date(x[x.length - 1]).getTime() > t;
  }, [live, seen.liveTs0], { timeout: 30000 });
  seen.liveTs1 = await lastTs(live);
  seen.livePoints1 = await chartPoints(live);
  seen.forecastSteps = await page.evaluate(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d.data[7].x.length;
  }, live);
  seen.frames = await page.evaluate(() => window.sg.frames);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(outdir, "dashboard-series.png"), fullPage: true, timeout: 90000 });
  await page.click('nav button[data-view="overview"]');
  await page.waitForTimeout(1200);
  await page.screenshot({ path: join(outdir, "dashboard-overview.png"), fullPage: true, timeout: 90000 });
  await page.click('nav button[data-view="outliers"]');
  await page.screenshot({ path: join(outdir, "dashboard-outliers.png"), fullPage: true, timeout: 90000 });
  await page.click('nav button[data-view="cluster"]');
  seen.workerRows = await page.locator("#cluster table.workers tbody tr").count();
  await page.screenshot({ path: join(outdir, "dashboard-cluster.png"), fullPage: true, timeout: 90000 });

  // 4b. The silent sensor's outage ends (40 s long): it reports again and leaves the view.
  await page.click('nav button[data-view="silent"]');
  await page.waitForFunction(k => !document.querySelector(`#silent tbody tr[data-key="${k}"]`), seen.silent, { timeout: 90000 });
  seen.silentLeft = true;
  // Its chart, still open, received the new points and lost the badge.
  await page.waitForFunction(k => {
    const d = [...document.querySelectorAll(".series-chart")].find(e => e.dataset.key === k);
    return d && d.parentElement.querySelector(".silent-badge").textContent === "";
  }, seen.silent, { timeout: 30000 });
  seen.silentBadgeCleared = true;

  // 5. Spikes as excursions, closed by the next ordinary reading.
  await page.click('nav button[data-view="sessions"]');
  seen.session = await (await page.waitForFunction(() => {
    const tr = document.querySelector('#sessions tbody tr[data-key^="sensor/"]');
    return tr && tr.dataset.key;
  }, null, { timeout: 60000 })).jsonValue();
  seen.sessionMax = Number((await page.textContent('#sessions tbody tr[data-key^="sensor/"] td:nth-child(9)')).replace(/,/g, ""));
  seen.sessionsCount = await count("#sessions-count");
  await page.screenshot({ path: join(outdir, "dashboard-sessions.png"), fullPage: true, timeout: 90000 });
} catch (e) {
  await fail(browser, page, String(e));
}
seen.pageErrors = errors;
if (errors.length) await fail(browser, page, "errors on the page: " + errors.join("; "));
console.log(JSON.stringify({ ok: true, seen }));
await browser.close();
