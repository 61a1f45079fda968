"""The web app (web/, issue 9) in real headless Chromium against a real anvil and the real backend.

One stack per module: an anvil of its own, the five contracts deployed, a Datanet created by its
curator, and `provenant app` (the one backend process, serving web/dist) in a subprocess; the
`stack`, `browser` and `page` fixtures are web_support's. The page gets a test-only EIP-1193 wallet
through `page.add_init_script` (web_support.WALLET_JS; not part of the production bundle): it
announces itself over EIP-6963, refuses any chain but 31337, and forwards JSON-RPC to anvil, whose
unlocked dev accounts sign (personal_sign, eth_signTypedData_v4, eth_sendTransaction). Screenshots
of every page at desktop and phone width, and of any failure, go to build/web-screenshots/
(git-ignored).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from web_support import CURATOR, DESKTOP, PHONE, SHOTS, USER, Stack, browser, connect, get, new_page, open_page, \
    page, page_overflow, playwright_sync, sign_in, stack  # noqa: F401 - fixtures used by name

PAGES = ["datanets", "datanets/1", "datanets/new", "contribute", "curate", "factory", "models", "playground", "rewards"]


def _serves_metadata(stack: Stack) -> bool:
    paths = json.loads(get(f"{stack.url}/openapi.json"))["paths"]
    return "/v1/datanets/{datanet_id}" in paths or "/v1/content/{cid}" in paths


def test_every_page_renders_at_desktop_and_phone_width_without_console_errors(page, stack: Stack) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        for route in PAGES:
            open_page(page, stack, route)
            if route == "datanets":
                listed = page.get_by_test_id("datanet-list").inner_text()
                # The name comes from the Datanet's metadata where the server exposes it.
                assert ("Support tickets" if _serves_metadata(stack) else "Datanet 1") in listed and "CC-BY-4.0" in listed
                page.get_by_test_id("datanet-search").fill("cc-by")
                assert "CC-BY-4.0" in page.get_by_test_id("datanet-list").inner_text()
                page.get_by_test_id("datanet-search").fill("no such datanet")
                assert "No Datanet matches." in page.get_by_test_id("datanet-list").inner_text()
                page.get_by_test_id("datanet-search").fill("")
            overflow = page_overflow(page)
            assert overflow <= 1, f"#/{route} is {overflow}px wider than the {size_name} viewport"
            page.screenshot(path=str(SHOTS / f"{route.replace('/', '-')}-{size_name}.png"), full_page=True)
        if size_name == "desktop":
            connect(page)  # the phone pass shows the connected header
    assert page.console.errors == []


def test_keyboard_reaches_navigation_and_the_wallet(page, stack: Stack) -> None:
    open_page(page, stack, "datanets")
    reached = []
    for _ in range(14):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.textContent.trim()"))
    assert "Skip to content" in reached and "Contribute" in reached and "Rewards" in reached
    assert any(r.startswith("Connect") for r in reached), reached
    page.get_by_test_id("connect").focus()
    page.keyboard.press("Enter")  # a keyboard user connects the wallet too
    page.get_by_test_id("account").wait_for()
    assert page.console.errors == []


def test_a_wallet_on_another_chain_is_asked_to_switch_and_signs_nothing_before(browser, stack: Stack) -> None:
    page = new_page(browser, rpc_url=stack.devnet.rpc_url, account=USER.address, start_chain=1)
    console = page.console
    try:
        open_page(page, stack, "datanets")
        connect(page)
        assert page.get_by_test_id("chain").inner_text() == "chain 1"
        assert page.get_by_test_id("sign-in").count() == 0  # nothing to sign on the wrong chain
        page.get_by_test_id("switch-chain").click()
        page.get_by_test_id("sign-in").wait_for()
        assert page.get_by_test_id("chain").inner_text() == "chain 31337"
        sign_in(page)
        assert console.errors == []
    finally:
        page.context.close()


def test_sign_in_with_ethereum_gives_a_session_the_backend_accepts(page, stack: Stack) -> None:
    open_page(page, stack, "datanets")
    connect(page)
    assert page.get_by_test_id("chain").inner_text() == "chain 31337"
    sign_in(page)
    token = page.evaluate("() => JSON.parse(sessionStorage.getItem('provenant.session')).token")
    req = urllib.request.Request(f"{stack.url}/v1/auth/session", headers={"Authorization": f"Bearer {token}"})
    assert json.loads(urllib.request.urlopen(req, timeout=5).read())["address"] == USER.address  # noqa: S310
    page.get_by_test_id("sign-out").click()
    page.get_by_test_id("sign-in").wait_for()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310
    assert refused.value.code == 401
    assert page.console.errors == []


def _drop_file(page, name: str, text: str) -> None:  # type: ignore[no-untyped-def]
    """Drag and drop a file onto the drop zone, as a user would from their file manager."""
    data = page.evaluate_handle(
        """([name, text]) => { const dt = new DataTransfer();
             dt.items.add(new File([text], name, { type: 'application/x-ndjson' })); return dt; }""", [name, text])
    page.get_by_test_id("dropzone").dispatch_event("drop", {"dataTransfer": data})


def test_contribute_shows_errors_by_line_before_signing_then_records_a_good_file_on_chain(page, stack: Stack) -> None:
    before = int(stack.client.call(stack.contracts.datanets.functions.contributionCount()))
    open_page(page, stack, "contribute")
    connect(page)
    knows_rules = _serves_metadata(stack)
    if knows_rules:
        assert "classification rows labelled account / technical / shipping / billing" in page.get_by_test_id("rules").inner_text()
    bad = "\n".join([
        json.dumps({"text": "my parcel never came", "label": "shipping"}),
        '{"text": "broken json", "label": ',
        json.dumps({"text": "refund please", "label": "refunds"}),
        json.dumps({"text": "hello"}),
    ]) + "\n"
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "bad.jsonl", "mimeType": "application/x-ndjson", "buffer": bad.encode()}])
    errors = page.get_by_test_id("validation-errors")
    errors.wait_for()
    text = errors.inner_text()
    assert "line 2" in text and "not valid JSON" in text
    if knows_rules:  # the page checks the Datanet's own rules too
        assert "line 3" in text and "refunds" in text and "line 4" in text and "missing key 'label'" in text
    assert page.get_by_test_id("submit-contribution").is_disabled()
    assert page.locator("[data-testid=tx]").count() == 0  # nothing was signed
    assert int(stack.client.call(stack.contracts.datanets.functions.contributionCount())) == before

    # A file only the Datanet's rules refuse (a label it does not have): caught in the page when it
    # knows the rules, otherwise by the server on upload; either way by line, and nothing is sent.
    off_label = json.dumps({"text": "can I get a refund?", "label": "refunds"}) + "\n"
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "labels.jsonl", "mimeType": "application/x-ndjson", "buffer": off_label.encode()}])
    if not knows_rules:
        page.get_by_test_id("validation-ok").wait_for()
        page.get_by_test_id("submit-contribution").click()
    refused = page.get_by_test_id("validation-errors")
    playwright_sync.expect(refused).to_contain_text("line 1: label 'refunds' is not one of", timeout=15_000)
    assert page.locator("[data-testid=tx]").count() == 0
    assert int(stack.client.call(stack.contracts.datanets.functions.contributionCount())) == before

    good = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in (
        ("I was charged twice for my subscription this month.", "billing"),
        ("The app crashes when I open settings on Android 14.", "technical"),
        ("Where is my order? Tracking has not moved for a week.", "shipping"),
    ))
    _drop_file(page, "tickets.jsonl", good)
    page.get_by_test_id("validation-ok").wait_for()
    page.get_by_test_id("submit-contribution").click()
    done = page.get_by_test_id("contribution-done")
    done.wait_for(timeout=30_000)
    assert page.locator("[data-testid=tx][data-status=confirmed]").count() == 1
    assert int(stack.client.call(stack.contracts.datanets.functions.contributionCount())) == before + 1
    record = stack.client.call(stack.contracts.datanets.functions.getContribution(before + 1))
    assert record[1] == USER.address  # contributor: the wallet's account
    assert f"Contribution #{before + 1} recorded: 3 rows" in done.inner_text()
    stack.wait_indexed(lambda: stack.index(f"/contributions/{before + 1}")["status"] == "pending")
    # Chromium logs the refused upload's HTTP 422 itself; nothing else may appear.
    expected = [] if knows_rules else ["console.error: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"]
    assert page.console.errors == expected


def test_a_revert_is_shown_as_failed_with_its_decoded_reason(page, stack: Stack) -> None:
    """USER is not a curator: approving is refused by the chain, and the page says why."""
    count = int(stack.client.call(stack.contracts.datanets.functions.contributionCount()))
    if count == 0:
        pytest.skip("needs the contribution made by the previous test")
    open_page(page, stack, "curate/1")
    connect(page)
    page.wait_for_selector("[data-testid^=pick-]")
    page.locator("[data-testid^=pick-]").first.check()
    page.get_by_test_id("approve").click()
    failed = page.locator("[data-testid=tx][data-status=failed]")
    failed.wait_for()
    assert "NotCurator(1, " in failed.inner_text()
    assert page.console.errors == []


def test_create_datanet_checks_the_form_then_stores_metadata_and_creates_it_from_the_wallet(page, stack: Stack) -> None:
    before = int(stack.client.call(stack.contracts.datanets.functions.datanetCount()))
    open_page(page, stack, "datanets/new")
    connect(page)
    page.get_by_test_id("dn-name").fill("Product reviews")
    page.get_by_test_id("dn-labels").fill("positive")  # one label: not a classification
    page.get_by_test_id("dn-curators").fill("0x1234, " + CURATOR.address)
    page.get_by_test_id("create-datanet").click()
    problems = page.get_by_test_id("dn-problems").inner_text()
    assert "at least two labels" in problems and "not addresses: 0x1234" in problems
    assert page.locator("[data-testid=tx]").count() == 0  # nothing stored or signed

    page.get_by_test_id("dn-description").fill("Short product reviews by sentiment.")
    page.get_by_test_id("dn-labels").fill("positive, negative, neutral")
    page.get_by_test_id("dn-max-rows").fill("50")
    page.get_by_test_id("dn-curators").fill(f"{CURATOR.address}\n{USER.address}")
    page.get_by_test_id("dn-stake").fill("0.5")
    page.get_by_test_id("dn-slash").check()
    page.get_by_test_id("create-datanet").click()
    done = page.get_by_test_id("datanet-created")
    done.wait_for(timeout=30_000)
    new_id = before + 1
    assert f"Datanet #{new_id} created" in done.inner_text()
    page.locator("[data-testid=tx][data-status=confirmed]", has_text="Create Datanet Product reviews").wait_for()
    record = json.loads(get(f"{stack.url}/v1/datanets/{new_id}"))
    assert record["metadata"]["name"] == "Product reviews"
    assert record["metadata"]["labels"] == ["positive", "negative", "neutral"]
    assert record["metadata"]["max_rows_per_file"] == 50
    assert record["owner"] == USER.address and int(record["stake"]) == 5 * 10**17 and record["slash_on_reject"] is True
    for who in (CURATOR, USER):
        assert stack.client.call(stack.contracts.datanets.functions.isCurator(new_id, who.address))
    # The new Datanet is listed by name once the index has it, and its rules drive Contribute.
    stack.wait_indexed(lambda: stack.index("/datanets")["total"] >= new_id)
    open_page(page, stack, "datanets")
    assert "Product reviews" in page.get_by_test_id("datanet-list").inner_text()
    open_page(page, stack, f"contribute/{new_id}")
    assert "labelled positive / negative / neutral; at most 50 rows" in page.get_by_test_id("rules").inner_text()
    assert page.console.errors == []


def test_duplicate_rows_are_flagged_after_upload_and_in_the_review_queue(browser, page, stack: Stack) -> None:
    base = "my card was charged twice for the same order and I would like one of the payments refunded please"
    rows = [
        {"text": base, "label": "billing"},
        {"text": "  My CARD was charged twice for the same order and I would like one of the payments refunded please ", "label": "billing"},
        {"text": base + " today", "label": "billing"},
        {"text": "the login page says my password is wrong even after I reset it twice this morning", "label": "account"},
        {"text": base.replace("I would", "I would really"), "label": "billing"},  # a word inserted: words added
    ]
    open_page(page, stack, "contribute/1")
    connect(page)
    _drop_file(page, "dups.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    page.get_by_test_id("validation-ok").wait_for()
    page.get_by_test_id("submit-contribution").click()
    page.get_by_test_id("contribution-done").wait_for(timeout=30_000)
    flags = page.get_by_test_id("duplicate-flags")
    text = flags.inner_text()
    assert "line 2: exact duplicate of line 1 of the same file" in text, text
    assert "line 3: near duplicate" in text and "of line 1 of the same file" in text, text
    assert page.locator("[data-testid=duplicate-flags] li[data-line='4']").count() == 0
    assert "line 5: near duplicate" in text and "95% similar" in text, text
    contribution = int(stack.client.call(stack.contracts.datanets.functions.contributionCount()))
    stack.wait_indexed(lambda: stack.index(f"/contributions/{contribution}")["status"] == "pending")
    assert page.console.errors == []

    # The curator sees the same flags in the review queue, beside a preview of the rows.
    curator = new_page(browser, viewport=PHONE, rpc_url=stack.devnet.rpc_url, account=CURATOR.address)
    console = curator.console
    try:
        open_page(curator, stack, "curate/1")
        connect(curator)
        cell = curator.get_by_test_id(f"flags-{contribution}")
        cell.wait_for()
        assert cell.get_attribute("data-exact") == "1" and cell.get_attribute("data-near") == "2"
        cell.locator("summary").click()
        assert "near duplicate" in cell.inner_text() and "exact duplicate" in cell.inner_text()
        row = curator.locator("tr", has=curator.get_by_test_id(f"pick-{contribution}"))
        assert "my card was charged twice" in row.locator("pre.preview").inner_text()
        overflow = page_overflow(curator)
        assert overflow <= 1, f"#/curate/1 is {overflow}px wider than the phone viewport"
        SHOTS.mkdir(parents=True, exist_ok=True)
        curator.screenshot(path=str(SHOTS / "curate-1-flags-phone.png"), full_page=True)
        assert console.errors == []
    finally:
        curator.context.close()
