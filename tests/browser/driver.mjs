// Headless-Chromium driver for the viewer tests and benchmark: one JSON command per stdin line, one JSON answer
// per stdout line. Python (splatworks.viewer.testing.BrowserDriver) sends the commands and asserts on results.
//
// Chromium is Debian's /usr/bin/chromium (`make browser`), driven by playwright-core from the viewer's
// node_modules (`make viewer`); WebGL runs on SwiftShader (software), so no GPU is needed.
//
// Commands: {"cmd": "goto", "url"} | {"cmd": "eval", "expr"} | {"cmd": "wait", "expr", "timeout_ms"}
//   | {"cmd": "screenshot", "path"} | {"cmd": "setInputFiles", "selector", "files"} | {"cmd": "click", "selector"}
//   | {"cmd": "drag", "from": [x, y], "to": [x, y], "button"} | {"cmd": "wheel", "at": [x, y], "dy"}
//   | {"cmd": "touch", "steps": [{"type": "touchStart"|"touchMove"|"touchEnd", "points": [[x, y], ...]}]}
//   | {"cmd": "text", "selector"} | {"cmd": "logs"} | {"cmd": "close"}
// Answers: {"ok": true, "value": ...} or {"ok": false, "error": "..."}.

import { createRequire } from "node:module";
import readline from "node:readline";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const viewerDir = process.env.SPLATWORKS_VIEWER_DIR;
if (!viewerDir) throw new Error("set SPLATWORKS_VIEWER_DIR to src/splatworks/viewer (it holds node_modules)");
const { chromium } = createRequire(path.join(viewerDir, "package.json"))("playwright-core");

const width = Number(process.env.VIEWPORT_W || 320), height = Number(process.env.VIEWPORT_H || 240);
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "splatworks-chromium-"));
const args = [
  "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
  "--disable-default-apps",
];
// A fresh profile each run (playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args, headless: true,
  viewport: { width, height }, deviceScaleFactor: 1, hasTouch: true,
});
const page = context.pages()[0] || (await context.newPage());
const logs = [];
page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
page.on("requestfailed", (r) => logs.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
page.on("request", (r) => { if (!/^(http:\/\/127\.0\.0\.1[:/]|blob:|data:)/.test(r.url())) logs.push(`external: ${r.url()}`); });

async function run(c) {
  switch (c.cmd) {
    case "goto": return (await page.goto(c.url, { waitUntil: "load" }))?.status() ?? null;
    case "eval": return await page.evaluate(c.expr);
    case "wait":
      await page.waitForFunction(c.expr, null, { timeout: c.timeout_ms ?? 30000, polling: 100 });
      return true;
    case "screenshot": await page.screenshot({ path: c.path, timeout: c.timeout_ms ?? 120000 }); return c.path;
    case "setInputFiles": await page.setInputFiles(c.selector, c.files); return true;
    case "click": await page.click(c.selector); return true;
    case "text": return await page.textContent(c.selector);
    case "drag": {
      const button = c.button || "left";
      await page.mouse.move(...c.from);
      await page.mouse.down({ button });
      for (let k = 1; k <= 8; k++) {
        await page.mouse.move(c.from[0] + ((c.to[0] - c.from[0]) * k) / 8, c.from[1] + ((c.to[1] - c.from[1]) * k) / 8);
      }
      await page.mouse.up({ button });
      return true;
    }
    case "touch": {
      // A gesture as raw touch events: steps = [{type: "touchStart"|"touchMove"|"touchEnd", points: [[x, y], ...]}].
      const cdp = await context.newCDPSession(page);
      for (const step of c.steps) {
        await cdp.send("Input.dispatchTouchEvent", {
          type: step.type, touchPoints: step.points.map(([x, y], id) => ({ x, y, id })),
        });
      }
      await cdp.detach();
      return true;
    }
    case "wheel": await page.mouse.move(...c.at); await page.mouse.wheel(0, c.dy); return true;
    case "logs": return logs.splice(0);
    case "close": return true;
    default: throw new Error(`unknown command ${c.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  let answer;
  try { answer = { ok: true, value: await run(c) }; } catch (e) { answer = { ok: false, error: String(e.message || e), logs: logs.slice(-30) }; }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (c.cmd === "close") break;
}
await context.close();
fs.rmSync(userDataDir, { recursive: true, force: true });
rl.close();
process.exit(0);  // stdin stays open in the parent: without this node would wait for it
