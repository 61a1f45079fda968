"""Generate the demo's bundled sample data (support-ticket routing) deterministically.

The JSONL files under ``samples/`` are the data; this script only shows how they were made and
rebuilds them byte for byte: ``python -m provenant.demo.make_samples [--out DIR] [--check]``.
Stdlib only, every file drawn from its own fixed seed. Texts avoid their label word most of the
time and borrow other labels' vocabulary ("charged" in a customs ticket, "login" in a refund) so
that a classifier has to learn the task rather than spot a keyword.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LABELS = ("billing", "technical", "shipping", "account")
SAMPLES = Path(__file__).resolve().parent / "samples"

SLOTS: dict[str, tuple[str, ...]] = {
    "product": ("the Aurora X2 headphones", "my Nimbus smart speaker", "the Orbit 4K webcam", "the Kestrel router",
                "the Pebble fitness band", "a 2TB Vault drive", "the Cascade coffee grinder", "the Atlas standing desk",
                "the Lumen desk lamp", "a pair of TrailRunner shoes", "the Velo e-bike charger", "the Harbor tablet case"),
    "service": ("the Pro plan", "my Premium subscription", "StudioMix Plus", "the cloud backup add-on",
                "the extended warranty", "the Family plan", "the Teams tier"),
    "app": ("the mobile app", "the desktop client", "the web dashboard", "StudioMix", "the companion app", "the Nimbus app"),
    "device": ("iPhone 13", "iPhone 15 Pro", "Pixel 8", "Galaxy S22", "my Windows 11 laptop", "a MacBook Air (M2)",
               "an iPad mini", "a Chromebook", "Ubuntu 22.04", "my Android tablet", "a Surface Pro 9"),
    "browser": ("Chrome", "Firefox", "Safari", "Edge", "Brave"),
    "carrier": ("DHL", "UPS", "FedEx", "Royal Mail", "USPS", "DPD", "Canada Post", "PostNL"),
    "country": ("Germany", "Canada", "Australia", "Brazil", "Japan", "Ireland", "Norway", "India", "Mexico",
                "South Africa", "the Netherlands", "Poland", "Curaçao", "Côte d'Ivoire", "New Zealand"),
    "city": ("Köln", "São Paulo", "Montréal", "Zürich", "Leeds", "Osaka", "Kraków", "Melbourne", "Austin"),
    "day": ("on Monday", "yesterday", "last week", "three days ago", "on the 14th", "this morning", "on Friday"),
    "duration": ("two weeks", "10 days", "over a month", "five days", "almost three weeks", "48 hours"),
    "card": ("my Visa ending 4421", "my Mastercard", "PayPal", "Apple Pay", "my debit card", "my company Amex"),
    "email": ("j.doe@example.com", "my work address", "my old Gmail address", "maria.k@example.org", "my Outlook email"),
    "promo": ("SPRING20", "WELCOME10", "BF-2024", "FRIENDS15", "LOYAL5"),
    "version": ("4.2.1", "5.0", "3.18.7", "2024.11", "6.1 beta"),
    "year": ("2022", "2023", "last year", "the last tax year"),
}

T = {
    "billing": (
        "I was charged {amount} twice for {service} this month. Can you refund the duplicate?",
        "{card} was debited {amount} but {service} still shows as unpaid.",
        "I cancelled {service} {day} and still got charged {amount}. Please reverse it.",
        "Could you send me a VAT invoice for order {order}? Our finance team needs the company name on it.",
        "The promo code {promo} didn't apply at checkout, so I paid full price ({amount}).",
        "Why did my renewal go up from {amount} to {amount2} without any notice?",
        "I can log in fine but the invoices page lists a payment of {amount} I don't recognise.",
        "Refund for order {order} was approved {day} but the money hasn't reached {card} yet.",
        "Please move {service} from monthly to yearly payments and prorate the difference.",
        "There's a {amount} charge on my statement from you with reference {order}. What is it for?",
        "My payment keeps getting declined even though {card} has funds, it just says transaction failed.",
        "I was promised a student discount but the receipt for {service} shows the standard price.",
        "Can you remove the sales tax from my invoice? We are a registered business in {country}.",
        "Got an email saying the renewal payment failed, but my bank shows the {amount} as taken.",
        "You charged my account {amount} for express delivery on {order} but it came standard, I want the difference back.",
        "The app store took {amount} for {service} but I already pay for it on your website.",
        "Need copies of all receipts from {year} for my tax return please.",
        "Why is there a pending authorisation of {amount} when I only ordered {product}?",
        "We were billed for 5 seats on {service} but our team only has 3 users.",
        "The trial was supposed to be free but I see {amount} taken {day}.",
        "Can I pay for order {order} by bank transfer instead of card?",
        "I'm in {country} but was charged in USD and my bank added conversion fees on top of {amount}.",
        "Double payment for order {order}, once via {card} and again by bank transfer. Please refund one of them.",
        "The credit note for the returned {product} still hasn't been applied to my next invoice.",
        "Is there a way to get one combined monthly statement instead of a receipt per purchase?",
        "Charged twice for order {order}, please refund.",
        "Where can I download my old invoices?",
        "Who do I talk to about a billing mistake? I paid {amount} for {product} while it was on sale.",
    ),
    "technical": (
        "{app} crashes as soon as I open it on {device}. Reinstalling didn't help.",
        "Getting error {error} when I try to sync files from {device}.",
        "{product} won't connect to wifi after the latest firmware update.",
        "The payment page in {app} just spins forever on {browser}, so I can't finish checkout.",
        "The login button does nothing on {browser}, the console shows {error}.",
        "Bluetooth pairing between {product} and {device} keeps dropping every few minutes.",
        "After updating to version {version} the export to PDF option is greyed out.",
        "{product} gets really hot and restarts by itself about twice an hour.",
        "The order tracking page on your site throws {error} whenever I click details.",
        "Notifications stopped working on {device} {day}, even though they're enabled in settings.",
        "Video calls through {product} freeze after 30 seconds while the audio keeps going.",
        "Your API has returned {error} for every request since this morning and our integration is down.",
        "{app} on {device} is stuck on the loading screen at 87%.",
        "The battery on {product} drains from full to empty in under an hour. Is that a known bug?",
        "I can't upload images bigger than 5 MB, the upload fails with {error}.",
        "The verification code arrives fine but then {app} shows {error} and closes.",
        "The screen on {product} flickers whenever brightness is below 30%.",
        "Dark mode makes the text unreadable in {app} on {device}.",
        "The setup wizard for {product} fails at step 3 with {error}, I already tried a factory reset.",
        "Search in {app} returns no results at all, even for items I know exist.",
        "The firmware updater for {product} says checksum mismatch and refuses to continue.",
        "Sound is out of sync with the picture when casting from {device} to {product}.",
        "Ever since version {version}, {app} signs me out every time I switch apps on {device}.",
        "Invoices print as blank pages from {browser}, the preview looks fine though.",
        "{app} keeps crashing on {device} since the update.",
        "Error {error} every time I press save.",
        "Not sure if this is a technical fault but the barcode scanner in {app} won't focus on {device}.",
    ),
    "shipping": (
        "Order {order} was supposed to arrive {day} but tracking hasn't updated in {duration}.",
        "The {carrier} driver marked my parcel as delivered, but nothing was left at my door.",
        "I was charged {amount} in customs fees when {product} arrived in {country}. Wasn't that included?",
        "Can you send {product} to {country}? Checkout won't let me pick it as a destination.",
        "My package arrived with the box crushed and {product} inside is scratched.",
        "I need to change the delivery address on order {order}, I'm moving next week.",
        "The {carrier} tracking number only says label created and it's been {duration}.",
        "Received the wrong item: I ordered {product} but got a phone case instead.",
        "Is express delivery available to {country}? I need {product} before the 20th.",
        "Half of order {order} arrived, the second box with {product} is missing.",
        "The parcel is stuck at the {carrier} depot in {city} and they say they need paperwork from you.",
        "Can I collect order {order} from a pickup point instead of having it delivered at home?",
        "My package went back to the sender because the courier couldn't find my building.",
        "I logged in to check order {order} and it still says processing after {duration}. When will it be dispatched?",
        "The estimate at checkout said 2-3 days, it has now been {duration}.",
        "{carrier} wants {amount} import duty before they release the box, is that legit?",
        "Please hold my parcel at the depot in {city}, I'm away until the end of the month.",
        "I ordered two of {product} but the box only had one inside.",
        "The courier left {product} with a neighbour I don't know. Can you find out which house?",
        "Will {product} come in plain packaging? It's a surprise gift.",
        "The return label from {carrier} won't scan at the post office so my refund is on hold.",
        "Order {order} shows as delivered in {country} but I live in {city}!",
        "How long does standard post to {country} usually take for something the size of {product}?",
        "The link in my dispatch email shows someone else's parcel, not order {order}.",
        "Your warehouse sent {product} by sea freight instead of air and it's now {duration} late.",
        "Where is my parcel?? Order {order}.",
        "Parcel never arrived, tracking stuck since {day}.",
        "Which shipping option gets {product} to {city} fastest?",
    ),
    "account": (
        "I forgot my password and the reset email never arrives at {email}.",
        "How do I change the email on my profile from {email} to my new one?",
        "Someone logged in from {country} {day} and changed my password. Please lock it down.",
        "I'd like my profile and all my personal data deleted under GDPR.",
        "I lost the phone with my authenticator app, how can I get back in without the code?",
        "My username shows as {username} but I never chose that. Can I rename it?",
        "I have two logins, one with {email} and one through Google. Can you merge them?",
        "Please make my colleague an admin on our team workspace, I'm the owner.",
        "Got a suspicious sign-in alert {day} that wasn't me. What should I do?",
        "I'm locked out after too many attempts and it says to try again in 24 hours.",
        "Can I transfer {service} to my partner's profile so they manage it from now on?",
        "The verification link in the sign-up email says it has expired. Can you send a new one?",
        "I want to stop all marketing emails and update my communication preferences.",
        "My profile still shows my old surname, I got married and need it updated.",
        "Why was my profile suspended? I got no warning and now I can't see my orders.",
        "Please close my membership for good, I won't be using {service} anymore.",
        "How do I turn off two-step verification? The codes keep going to my old number.",
        "I signed up with {email} but there's a typo in it. Can you correct it?",
        "Can my kids have their own logins under one family profile?",
        "The security questions on my profile are wrong so I can't verify my identity.",
        "I need to change the phone number linked to my sign-in, the old SIM is gone.",
        "Is it possible to download a copy of all the data you hold about me?",
        "After I changed my card details I can't sign in any more, it says user not found.",
        "Please unlink my Facebook login, I want to use email and password only.",
        "A former employee still has admin access to our company workspace, please remove them.",
        "Password reset link not working, please help.",
        "Need to change my username, how do I do that?",
        "I think my account was hacked, the recovery phone number was changed {day}.",
    ),
}

# Product FAQ questions (erin): same labels, a different register.
FAQ = {
    "billing": ("How do I get a refund for a subscription I didn't use?", "Which payment methods do you accept in {country}?",
                "When exactly am I charged for {service}?", "Can I get an invoice with my company details on it?",
                "Do you offer discounts for students or charities?", "What happens if my card fails at renewal?",
                "Are prices for {country} shown with VAT included?", "Can I pay for {service} with {card}?"),
    "technical": ("What are the system requirements for {app}?", "How do I update the firmware on {product}?",
                  "Does {app} work offline?", "Why doesn't {product} show up in my Bluetooth list?",
                  "How do I factory reset {product}?", "Is {app} compatible with {device}?",
                  "What does error {error} mean?", "Which browsers does {app} support?"),
    "shipping": ("How long does delivery to {country} take?", "Do you deliver to PO boxes in {country}?",
                 "Can I change the delivery address after ordering?", "What should I do if {product} arrives damaged?",
                 "Who pays import duties on orders to {country}?", "Which couriers do you use for {country}?",
                 "How do I send back {product}?", "Can {carrier} leave my parcel without a signature?"),
    "account": ("How do I reset my password?", "Can I change my username later?", "How do I turn on two-factor sign-in?",
                "How do I delete my profile and data?", "Can several people share one login?",
                "How do I update my email address?", "What do I do about a sign-in from {country} I don't recognise?",
                "Can I sign in with {email} instead of Google?"),
}

# Forum chit-chat (carol): loosely about a topic, or off topic altogether (label then random).
CHAT: dict[str | None, tuple[str, ...]] = {
    "billing": ("honestly {service} is worth every penny, {amount} a month is a steal imo",
                "lol my bank pinged me about the {amount} renewal and I forgot I even had {service}",
                "black friday deals better be good this year, saving up for {product}",
                "paid {amount} for {product} and zero regrets so far"),
    "technical": ("the new update to {app} looks so clean, loving the new icons",
                  "{product} has survived two toddler attacks so far, solid build quality",
                  "anyone tried {product} with {device}? thinking of getting one",
                  "running {app} on {device} for a month now and it's been smooth"),
    "shipping": ("{product} turned up today, unboxing pics later!!",
                 "the {carrier} guy and I are on first name basis at this point haha",
                 "love that the box for {product} was fully recyclable, nice touch",
                 "ordered {product} to {city} and it beat the estimate by two days"),
    "account": ("finally picked a username I'm not embarrassed by, {username} was taken lol",
                "just hit {n} years as a member here, time flies",
                "changed my profile pic to my dog, obviously an upgrade",
                "signed up here {day} after lurking for ages, hello from {city}"),
    None: ("what's everyone up to this weekend?", "first post here, hi all from {city}",
           "this forum is so much friendlier than the other one", "is it just me or is it freezing in {city} today",
           "anyone watching the match tonight? no spoilers please", "coffee or tea while you browse? asking for science",
           "happy friday folks, {n} more hours to go", "can we get a pets thread going, mine just learned to open doors"),
}

SPAM = ("BUY 1000 followers for {amount} at cheap-followers.example !!! limited offer",
        "Congratulations you have WON {product} for FREE, claim now at win-prizes.example",
        "Best crypto signals, 500% gains guaranteed, DM me now for the VIP group",
        "cheap SEO services, first page of google in 7 days, contact seo-king.example",
        "Replica watches 90% off with free worldwide delivery, order today at watches.example",
        "Verify your login within 24h to claim your {amount} refund: secure-verify.example",
        "Work from home and earn $3000 a week, no experience needed, click the link",
        "hot deals hot deals {product} for only {amount} visit deals-now.example")

GREETINGS = ("", "", "", "Hi,", "Hello,", "Hey team,", "Good morning,", "Hi there,", "Dear support,", "hello")
CLOSINGS = ("", "", "", "Thanks.", "Thanks in advance!", "Please help.", "Cheers", "Any help appreciated.",
            "This is urgent.", "thx", "Kind regards, Sam", "Regards, Priya", "Thank you so much!")
CONTEXT = ("", "", "", "", "I've been a customer for {n} years.", "This is the second time I'm writing about this.",
           "I'm writing from {city}.", "Sorry if this is the wrong place to ask.", "I already checked your help pages.")
FORUM_WRAP = ("Anyone else seeing this? {t}", "Quick question: {t}", "{t} Any ideas, folks?", "PSA for everyone: {t}",
              "Long time lurker. {t}", "{t} Mods, feel free to move this thread.", "[{product}] {t}")
CHAT_END = ("", "", " :)", " lol", "!!", " 🙂")
FAQ_WRAP = ("{t}", "{t}", "Q: {t}", "FAQ: {t}", "Hi, {t}", "Quick one: {t}")
MISSPELL = {"receive": "recieve", "address": "adress", "password": "pasword", "package": "pakage", "because": "becuase",
            "doesn't": "doesnt", "can't": "cant", "I'm": "im", "please": "plz", "definitely": "definately",
            "won't": "wont", "separate": "seperate", "parcel": "parcle", "receipt": "reciept"}


def _fill(template: str, rng: random.Random) -> str:
    def slot(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in ("amount", "amount2"):
            return f"{rng.choice('$$€£')}{rng.randint(4, 420)}.{rng.choice(('00', '99', '49', '95'))}"
        if key == "order":
            return rng.choice(("#", "order #", "PO-", "")) + f"{rng.choice('ABKMQ')}{rng.randint(10000, 99999)}"
        if key == "error":
            return rng.choice((f"E-{rng.randint(100, 999)}", f"0x8007{rng.randint(0, 0xFFFF):04X}", f"error {rng.choice((500, 502, 503, 403))}",
                               "ERR_CONNECTION_RESET", f"code {rng.randint(10, 99)}", "SSL_HANDSHAKE_FAILED"))
        if key == "username":
            return f"user{rng.randint(1000, 99999)}"
        if key == "n":
            return str(rng.randint(2, 12))
        if key == "t":  # a wrapper's hole for the body text, filled by the caller
            return match.group(0)
        return rng.choice(SLOTS[key])
    return re.sub(r"\{(\w+)\}", slot, template)


def _noise(text: str, rng: random.Random) -> str:
    """Typos and casing the way real tickets have them."""
    if rng.random() < 0.3:
        for right, wrong in MISSPELL.items():
            if right in text and rng.random() < 0.5:
                text = text.replace(right, wrong, 1)
    if rng.random() < 0.15:
        words = text.split()
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) >= 5 and w.isalpha():
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        text = " ".join(words)
    if rng.random() < 0.12:
        text = text.lower()
    if rng.random() < 0.1:
        text = text.rstrip(".!?")
    return text


def _ticket(label: str, rng: random.Random, wrap: tuple[str, ...] = ()) -> str:
    body = _fill(rng.choice(T[label]), rng)
    if wrap:
        body = _fill(rng.choice(wrap), rng).replace("{t}", body)
    parts = [rng.choice(GREETINGS), _fill(rng.choice(CONTEXT), rng), body, rng.choice(CLOSINGS)]
    if rng.random() < 0.15:  # some people write only the problem itself
        parts = ["", "", body, ""]
    if rng.random() < 0.35:
        parts[1], parts[2] = parts[2], parts[1]
    return _noise(" ".join(p for p in parts if p), rng)


@dataclass
class Writer:
    """Draws unique texts (across every file written) and keeps their lengths in 6..40 words."""
    out: Path
    seen: set[str]

    def draw(self, make: Callable[[], str]) -> str:
        # `make` is called here and now, so lambdas over loop variables are safe.
        for _ in range(500):
            text = make()
            if 6 <= len(text.split()) <= 40 and text not in self.seen:
                self.seen.add(text)
                return text
        raise RuntimeError("could not draw a new unique text; add templates or slot values")

    def write(self, name: str, rows: list[dict[str, str]]) -> None:
        with open(self.out / name, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _balanced(n: int, rng: random.Random) -> list[str]:
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    rng.shuffle(labels)
    return labels


def _other(label: str, rng: random.Random) -> str:
    return rng.choice([x for x in LABELS if x != label])


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out, set())
    # Fixed seed per file: changing one file's recipe never reshuffles another file.
    for name, n, seed in (("alice_1.jsonl", 120, 101), ("alice_2.jsonl", 100, 102),
                          ("bob_1.jsonl", 120, 201), ("bob_2.jsonl", 100, 202)):
        rng = random.Random(seed)
        w.write(name, [{"text": w.draw(lambda: _ticket(lab, rng)), "label": lab} for lab in _balanced(n, rng)])

    rng = random.Random(301)  # carol: chit-chat; exactly 40 of 100 labels drawn at random
    topics: list[str | None] = [LABELS[i % 4] for i in range(76)] + [None] * 24
    rows = []
    for topic in topics:
        text = w.draw(lambda: _noise(_fill(rng.choice(CHAT[topic]), rng) + rng.choice(CHAT_END), rng))
        rows.append({"text": text, "label": topic or ""})
    # The 24 off-topic posts have no true label, so they are 24 of the 40 random ones.
    for i in list(range(76, 100)) + rng.sample(range(76), 16):
        rows[i]["label"] = rng.choice(LABELS)
    rng.shuffle(rows)
    w.write("carol_1.jsonl", rows)

    rng = random.Random(401)  # dave: on-topic forum posts; exactly 20 of 80 labels flipped
    rows = [{"text": w.draw(lambda: _ticket(lab, rng, FORUM_WRAP)), "label": lab} for lab in _balanced(80, rng)]
    for i in rng.sample(range(80), 20):
        rows[i]["label"] = _other(rows[i]["label"], rng)
    w.write("dave_1.jsonl", rows)

    rng = random.Random(501)  # erin: product FAQ, correct labels
    def faq(label: str) -> str:
        return _noise(_fill(rng.choice(FAQ_WRAP), rng).replace("{t}", _fill(rng.choice(FAQ[label]), rng)), rng)
    w.write("erin_1.jsonl", [{"text": w.draw(lambda: faq(lab)), "label": lab} for lab in _balanced(80, rng)])

    rng = random.Random(601)  # mallory: spam with random labels, for the curator to reject
    def spam() -> str:
        return _fill(rng.choice(SPAM), rng) + rng.choice(("", " !!!", " 💰💰", " act now", " unsubscribe anytime"))
    w.write("mallory_spam.jsonl", [{"text": w.draw(spam), "label": rng.choice(LABELS)} for _ in range(40)])

    rng = random.Random(9001)  # held-out queries: own seed, and `seen` forbids repeating any text above
    w.write("queries.jsonl", [{"text": w.draw(lambda: _ticket(lab, rng)), "label": lab} for lab in _balanced(60, rng)])

    _write_bad(out / "bad")
    _write_datanets(out)


def _write_bad(bad: Path) -> None:
    bad.mkdir(parents=True, exist_ok=True)
    ok = b'{"text": "I was charged twice for my Pro plan", "label": "billing"}\n'
    (bad / "not_utf8.jsonl").write_bytes(ok + b'{"text": "The app crashes on start", "label": "technical"}\n'
                                         + b'{"text": "Parcel stuck in K\xf6ln \xff\xfe", "label": "shipping"}\n')
    (bad / "bad_json.jsonl").write_bytes(ok + b'{"text": "reset email never arrives", "label": account}\n')
    (bad / "missing_label.jsonl").write_bytes(ok + b'{"text": "My order never arrived"}\n')
    (bad / "unknown_label.jsonl").write_bytes(ok + ok.replace(b"twice", b"three times")
                                              + b'{"text": "Please refund my last order", "label": "refunds"}\n')
    (bad / "empty.jsonl").write_bytes(b"")


def _write_datanets(out: Path) -> None:
    common = {"license": "CC-BY-4.0", "task": "classification", "labels": list(LABELS),
              "max_rows_per_file": 1000, "max_bytes_per_file": 1048576}
    datanets = [
        {"name": "support-tickets", "description": "Customer-support tickets routed to billing, technical, shipping "
         "or account. Clean, on-task, labels checked.", **common, "used_by_demo_model": True,
         "contributors": {"alice": ["alice_1.jsonl", "alice_2.jsonl"], "bob": ["bob_1.jsonl", "bob_2.jsonl"],
                          "mallory": ["mallory_spam.jsonl"]},
         "curator_rejects": ["mallory_spam.jsonl"]},
        {"name": "forum-posts", "description": "Community forum posts about our products, labelled by volunteers. "
         "Noisy: much chit-chat and many wrong labels.", **common, "used_by_demo_model": True,
         "contributors": {"carol": ["carol_1.jsonl"], "dave": ["dave_1.jsonl"]}, "curator_rejects": []},
        {"name": "product-faq", "description": "Product FAQ questions, each labelled with the team that answers it. "
         "Not used to train the demo model.", **common,
         "used_by_demo_model": False, "contributors": {"erin": ["erin_1.jsonl"]}, "curator_rejects": []},
    ]
    doc = {"datanets": datanets, "queries": "queries.jsonl"}
    (out / "datanets.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _differences(a: Path, b: Path) -> list[str]:
    """Relative paths that are missing on one side or differ byte for byte."""
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    fa, fb = files(a), files(b)
    changed = {r for r in fa & fb if (a / r).read_bytes() != (b / r).read_bytes()}
    return sorted(str(r) for r in (fa ^ fb) | changed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=SAMPLES, help="folder to write (default: the bundled samples)")
    ap.add_argument("--check", action="store_true", help="regenerate in a temp folder and compare with --out")
    args = ap.parse_args(argv)
    if not args.check:
        generate(args.out)
        print(f"wrote samples to {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        diff = _differences(args.out, Path(tmp))
    for d in diff:
        print(f"differs from a fresh generation: {d}", file=sys.stderr)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
