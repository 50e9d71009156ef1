// Drives Debian's chromium through the operations page like an operator would.
// Run by tests/ops/test_ops_browser.py, which starts the real processes and checks the
// outcome on the CAD simulator. Input: one JSON argument
//   {"url", "token", "replay_id", "xss_id", "xss_caller", "screenshot", "timeout_ms"}
// Output: one JSON line on stdout with what was seen; any failed expectation exits 1.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
// Without the background-networking flags chromium keeps dialling Google's hosts, which
// this machine's closed network refuses; --no-sandbox because CI runs as root.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

async function main() {
  const input = JSON.parse(process.argv[2]);
  const timeout = input.timeout_ms || 30000;
  const seen = { dialogs: [], console_errors: [] };
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on('dialog', async (d) => { seen.dialogs.push(d.message()); await d.dismiss(); });
    page.on('console', (m) => { if (m.type() === 'error') seen.console_errors.push(m.text()); });

    // 1. The page needs the operator token: we land on the login form.
    await page.goto(input.url + '/');
    expect(new URL(page.url()).pathname === '/login', `redirected to /login, got ${page.url()}`);
    await page.fill('#token', 'not-the-token');
    await page.click('button[type=submit]');
    await page.getByText('Wrong operator token.').waitFor();
    seen.wrong_token_refused = true;
    await page.fill('#token', input.token);
    await page.click('button[type=submit]');
    await page.waitForSelector('#dead-letters');
    expect(new URL(page.url()).pathname === '/', `back on the page, got ${page.url()}`);

    // 2. Both dead letters are listed; the hostile caller is shown as text, not markup.
    const row = page.locator(`tr[data-id="${input.replay_id}"]`);
    await row.waitFor();
    seen.row_text = (await row.innerText()).replace(/\s+/g, ' ');
    const xssRow = page.locator(`tr[data-id="${input.xss_id}"]`);
    seen.xss_cell = await xssRow.locator('td').nth(4).textContent();
    expect(seen.xss_cell === input.xss_caller, `caller shown verbatim: ${seen.xss_cell}`);
    seen.dead_before = (await page.textContent('#dead')).trim();

    // 3. A POST without the CSRF token is refused, even with the session cookie and
    //    this page as its origin: the row's own form, its token field removed. (The
    //    page's CSP forbids fetch(), so a forged form is what an attacker has left.)
    const [refused] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST'
        && r.url().endsWith(`/dead-letters/${input.replay_id}/replay`)),
      page.evaluate((id) => {
        const form = document.querySelector(`tr[data-id="${id}"] form[action$="/replay"]`);
        form.querySelector('input[name=csrf]').remove();
        form.submit();
      }, input.replay_id),
    ]);
    seen.csrf_less_status = refused.status();
    expect(seen.csrf_less_status === 403, `POST without CSRF token: ${seen.csrf_less_status}`);
    await page.getByRole('heading', { name: 'Refused' }).waitFor();
    await page.goto(input.url + '/');
    await row.waitFor();

    // 4. Replay the call from its row.
    await row.getByRole('button', { name: 'Replay' }).click();
    await page.waitForSelector('#notice');
    seen.notice = (await page.textContent('#notice')).trim();
    expect(seen.notice.startsWith('Replayed 1 dead letter'), `notice: ${seen.notice}`);

    // 5. Look the call up until it is delivered.
    await page.fill('#call', input.replay_id);
    await page.click('#lookup button[type=submit]');
    const deadline = Date.now() + timeout;
    for (;;) {
      const status = (await page.textContent('#lookup-status')).trim();
      if (status === 'delivered') break;
      expect(Date.now() < deadline, `call delivered in time (status ${status})`);
      await page.waitForTimeout(500);
      await page.reload();
    }
    seen.lookup = (await page.innerText('#lookup-result')).replace(/\s+/g, ' ');
    seen.dead_after = (await page.textContent('#dead')).trim();
    seen.delivered_after = (await page.textContent('#delivered')).trim();
    await page.screenshot({ path: input.screenshot, fullPage: true });
    seen.screenshot = input.screenshot;
    process.stdout.write(JSON.stringify(seen) + '\n');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
