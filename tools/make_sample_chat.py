"""Writes bot/data/sample_chat.jsonl: the self-written sample chat that ``chatmood demo`` replays.

Everything here is invented (users, ids, lines). The chat follows one evening on the channel
``demo`` through clear mood phases: calm -> hype (a clutch play) -> funny (a fall off the map)
-> sad (the final round lost) -> angry (lag and a suspected cheater) -> love (a raid, gifted
subs) -> calm. Deterministic: the same file comes out every time.

    .venv/bin/python tools/make_sample_chat.py [OUT]
"""

from __future__ import annotations

import random
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.domain import ChatLine, EmoteSpan
from bot.replay.jsonl import to_jsonl
from bot.replay.logfile import SAMPLE_CHAT

CHANNEL = "demo"
CHANNEL_ID = "100000001"
START = datetime(2025, 11, 8, 20, 0, 0, tzinfo=UTC)

# Twitch global emotes carry spans (as EventSub reports them); BTTV/7TV/FFZ ones are plain text.
TWITCH_EMOTES = {
    "Kappa": "25",
    "<3": "9",
    "BibleThump": "86",
    "ResidentSleeper": "245",
    "PogChamp": "305954156",
    "LUL": "425618",
    "Kreygasm": "41",
    "DansGame": "33",
    "SwiftRage": "34",
    "FailFish": "360",
    "4Head": "354",
    "NotLikeThis": "58765",
    "SeemsGood": "64138",
    "HeyGuys": "30259",
    "VoHiYo": "81274",
    "TwitchUnity": "196892",
    "PJSalt": "36",
    "BabyRage": "22639",
}

STAFF = {  # login -> badges
    "demo": ("broadcaster", "subscriber"),
    "quiet_heron": ("moderator", "subscriber"),
    "lumen_moth": ("moderator",),
    "copper_kettle": ("vip", "subscriber"),
}
VIEWERS = (
    "pixel_otter",
    "marmalade_sky",
    "tin_foil_fern",
    "waffle_cartographer",
    "nova_pebble",
    "sleepy_quasar",
    "bramble_byte",
    "octo_lantern",
    "crispy_nebula",
    "velvet_turnip",
    "dusty_kazoo",
    "glimmer_goose",
    "saltwater_sprout",
    "tuesday_yeti",
    "mochi_meteor",
    "rusty_harmonica",
    "pocket_volcano",
    "lilac_gremlin",
    "zesty_walrus",
    "fog_lighthouse",
    "cobalt_snail",
    "paper_comet",
    "honey_badminton",
    "pickle_paladin",
    "minty_mammoth",
    "echo_tadpole",
    "quartz_noodle",
    "biscuit_wizard",
    "sunny_fjord",
    "rad_radish",
    "hollow_oboe",
    "lemon_drizzle42",
    "static_sparrow",
    "ninja_teacup",
    "orbit_muffin",
    "gravel_gecko",
)
RAIDER = "mossy_lantern"
SUBS = frozenset(VIEWERS[::3]) | {"bramble_byte", "velvet_turnip", "echo_tadpole"}
DISPLAY = {"pixel_otter": "Pixel_Otter", "mochi_meteor": "MochiMeteor", "rad_radish": "RadRadish", "demo": "Demo"}

CALM_OPEN = [
    "hi chat HeyGuys",
    "evening everyone",
    "first time catching the stream live",
    "what are we playing tonight?",
    "the new overlay looks clean",
    "how was your day demo",
    "is this ranked or casual?",
    "lurking with tea",
    "music is a vibe tonight",
    "what sens do you play on?",
    "hello from the night shift VoHiYo",
    "did the patch drop yet",
    "just got home, what did i miss",
    "the cat is on the keyboard again",
    "yo",
    "o7",
    "chat is cozy today",
    "what rank are we at now",
    "did you finish the sandwich from yesterday Kappa",
    "monkaS the queue is long",
    "any plans for the weekend stream?",
    "hiii",
    "warming up on aim trainer first?",
    "new headset sounds good",
    "catJAM",
    "good luck tonight",
    "is the discord event still on friday",
    "<img src=x onerror=alert(1)>",
    "how many wins so far",
    "chat be nice today ok",
    "peepoHey",
]
HYPE = [
    "PogChamp",
    "POGGERS",
    "LETSGO",
    "LETS GOOOO",
    "HE DID IT",
    "1V3 CLUTCH",
    "NO WAY",
    "CLIP IT CLIP IT",
    "WHAT A PLAY",
    "Kreygasm",
    "EZ Clap",
    "that flick was insane",
    "OMG OMG OMG",
    "POGGERS POGGERS POGGERS",
    "LETSGO LETSGO LETSGO",
    "PogChamp PogChamp PogChamp",
    "HUGE",
    "INSANE",
    "GIGACHAD play",
    "he is HIM",
    "somebody clip that",
    "I JUMPED OUT OF MY CHAIR",
    "THE CROWD GOES WILD",
    "PagMan",
    "monkaW that was close",
    "CLEAN",
    "ABSOLUTE CINEMA",
    "no shot that just happened",
    "best round of the year",
    "WE ARE SO BACK",
    "EZ",
    "W",
    "W W W W",
    "that timing PogChamp",
    "pro player confirmed",
    "HYPERS",
    "LETSGO demo LETSGO",
    "my heart is racing",
    "GG EZ",
    "the reflexes on this man",
]
FUNNY = [
    "LUL",
    "KEKW",
    "OMEGALUL",
    "LMAO",
    "LMAOOO",
    "he walked right off the map KEKW",
    "not the ledge again LUL",
    "ICANT",
    "the victory lap into the void OMEGALUL",
    "hahaha",
    "im crying",
    "bro forgot gravity exists KEKW",
    "that was the funniest thing ive seen all week",
    "LUL LUL LUL",
    "KEKW KEKW KEKW",
    "clip it for the wrong reasons",
    "4Head",
    "Jebaited",
    "the confidence LMAO",
    "he pressed the emote button instead of jump KEKW",
    "pepeLaugh",
    "i spit out my drink",
    "OMEGALUL OMEGALUL",
    "chat he is so washed LUL",
    "it's the chair's fault Kappa",
    "ahahaha no way",
    "bro speedran falling",
    "new world record for fastest fall KEKW",
    "xdd",
    "FailFish",
    "the chair has now lost four rounds in a row and honestly i respect it KEKW",
]
COPYPASTA_FUNNY = "the chair has now lost four rounds in a row and honestly i respect it KEKW"
SAD = [
    "F",
    "F",
    "F",
    "noooo",
    "NOOOO",
    "Sadge",
    "BibleThump",
    "so close",
    "PepeHands",
    "it was right there",
    "one more round and we had it",
    "NotLikeThis",
    "rip the cup run",
    "Sadge so close",
    "my heart",
    "noo why",
    "that hurts",
    "BibleThump BibleThump",
    "sad ending",
    "pain",
    "he played so well too",
    "FeelsBadMan",
    "i need a minute",
    "the dream is over Sadge",
    "F in the chat",
    "unlucky",
    "rough one",
    "oof",
    "crying rn",
    "we were so close PepeHands",
    "next time for sure",
    ":(",
]
ANGRY = [
    "wtf was that",
    "WTF",
    "that lag is trash",
    "this server is garbage",
    "he is 100% cheating",
    "unfair",
    "report him",
    "that guy was aiming through walls",
    "DansGame",
    "SwiftRage",
    "how is that not a ban",
    "the netcode is a joke",
    "ResidentSleeper devs",
    "refund the lag",
    "rigged",
    "this game is trash",
    "absolutely robbed",
    "PJSalt",
    "the tick rate is a disgrace",
    "nah that was a hacker",
    "ban him already",
    "this is so unfair",
    "BabyRage",
    "worst server in the world",
    "what a trash ruling",
    "cheater cheater cheater",
    "they need to fix this",
    "madge",
    "REFUND THE LAG REFUND THE LAG",
    "ResidentSleeper",
    "<script>alert(1)</script>",
    "garbage anti cheat",
    "i'm so mad rn",
    "this tournament is a joke",
]
LOVE = [
    "<3",
    "<3 <3 <3",
    "love this community",
    "peepoHug",
    "you played so well anyway <3",
    "proud of you demo",
    "welcome raiders!",
    "TwitchUnity",
    "thank you for the stream <3",
    "best streamer best chat",
    "hug everyone",
    "this chat is so wholesome",
    "love you all",
    "catJAM <3",
    "SeemsGood",
    "ily chat",
    "you deserve the cup",
    "so happy i found this stream",
    "the raid pog <3",
    "wholesome hours",
    "sending love from the raid",
    "peepoLove",
    "thank you for the gifted sub!",
    "appreciate you",
    "so glad to be here <3",
    "hearts for demo <3",
    "mossy raid mossy raid TwitchUnity",
    "you make my week better",
    "hi raiders <3",
]
RAIDERS = ("fern_tram", "velour_pony", "kiwi_satellite", "bubble_anvil", "drizzle_dune", "snoozy_cactus")
CALM_CLOSE = [
    "gn chat",
    "see you tomorrow",
    "what time is the next stream",
    "good stream",
    "thanks for the stream",
    "sleep well everyone",
    "that was a rollercoaster",
    "gg",
    "bye chat",
    "o7",
    "catJAM see you",
    "peepoBye",
    "good night from the night shift",
    "same time tomorrow?",
    "rest up demo",
    "what a night",
    "cya",
]


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    rate: float  # random chatter, messages per second on average
    pool: list[str]
    # Scripted lines: (seconds into the phase, login, text); "^" in a text replies to the line before it.
    script: tuple[tuple[float, str, str], ...] = ()


PHASES = (
    Phase(
        "calm",
        45,
        0.7,
        CALM_OPEN,
        (
            (1.0, "demo", "welcome in everyone, queueing for the finals bracket now"),
            (12.0, "nova_pebble", "what rank are we at now?"),
            (14.5, "quiet_heron", "^diamond 2, one win from masters SeemsGood"),
            (22.0, "tin_foil_fern", "!mood"),
            (30.0, "demo", "we are 3 wins in, one more for the cup"),
        ),
    ),
    Phase(
        "hype",
        40,
        2.0,
        HYPE,
        ((6.0, "demo", "CHAT DID YOU SEE THAT"), (20.0, "lumen_moth", "!mood"), (33.0, "demo", "I'M SHAKING LETSGO")),
    ),
    Phase(
        "funny",
        35,
        1.4,
        FUNNY,
        ((4.0, "demo", "i did not mean to do that"), (18.0, "copper_kettle", "clipped it, this is going on the reel")),
    ),
    Phase(
        "sad",
        35,
        1.1,
        SAD,
        ((2.0, "demo", "no... that one hurts"), (14.0, "octo_lantern", "!mood"), (25.0, "demo", "gg to them")),
    ),
    Phase(
        "angry",
        35,
        1.3,
        ANGRY,
        (
            (10.0, "quiet_heron", "keep it civil chat, no witch hunts please"),
            (22.0, "demo", "lag happens, we go again next week"),
        ),
    ),
    Phase(
        "love",
        40,
        1.3,
        LOVE,
        (
            (0.2, RAIDER, "mossy_lantern crew raiding in TwitchUnity TwitchUnity <3"),
            (3.0, "demo", "thank you so much for the raid @mossy_lantern <3 welcome everyone"),
            (15.0, "copper_kettle", "gifting 5 subs to the raiders <3"),
            (28.0, "demo", "honestly you all make losing feel like winning <3"),
            (34.0, "glimmer_goose", "!mood"),
        ),
    ),
    Phase(
        "calm",
        40,
        0.6,
        CALM_CLOSE,
        (
            (20.0, "sunny_fjord", "what time is the next stream?"),
            (22.0, "lumen_moth", "^tomorrow 8pm UTC as usual"),
            (38.0, "demo", "thanks for hanging out, see you tomorrow <3"),
        ),
    ),
)
_WORD = re.compile(r"\S+")


def emote_spans(text: str) -> tuple[EmoteSpan, ...]:
    return tuple(
        EmoteSpan(TWITCH_EMOTES[m[0]], m.start(), m.end()) for m in _WORD.finditer(text) if m[0] in TWITCH_EMOTES
    )


def badges(login: str) -> frozenset[str]:
    if login in STAFF:
        return frozenset(STAFF[login])
    return frozenset({"subscriber"}) if login in SUBS else frozenset()


def build(rng: random.Random) -> list[ChatLine]:
    ids = {login: str(rng.randrange(10_000_000, 999_999_999)) for login in (*STAFF, *VIEWERS, RAIDER, *RAIDERS)}
    ids["demo"] = CHANNEL_ID
    out: list[ChatLine] = []

    def say(at: float, login: str, text: str, reply_to: str | None = None) -> ChatLine:
        line = ChatLine(
            message_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            channel=CHANNEL,
            user_id=ids[login],
            user_login=login,
            user_name=DISPLAY.get(login, login),
            text=text,
            sent_at=START + timedelta(seconds=round(at, 3)),
            badges=badges(login),
            emotes=emote_spans(text),
            reply_to=reply_to,
            channel_id=CHANNEL_ID,
        )
        out.append(line)
        return line

    chatters = [*VIEWERS, "copper_kettle"]
    start = 0.0
    for phase in PHASES:
        if phase.name == "love":
            chatters += RAIDERS
        previous: ChatLine | None = None
        for at, login, text in phase.script:
            if text.startswith("^") and previous is not None:
                previous = say(start + at, login, f"@{previous.user_name} {text[1:]}", previous.message_id)
            else:
                previous = say(start + at, login, text)
        t = start
        while True:
            t += rng.expovariate(phase.rate)
            if t >= start + phase.seconds:
                break
            text = COPYPASTA_FUNNY if phase.name == "funny" and rng.random() < 0.12 else rng.choice(phase.pool)
            say(t, rng.choice(chatters), text)
        start += phase.seconds
    say(start + 1.0, "pixel_otter", '"><svg onload=alert(1)> {{ 7*7 }} javascript:alert(1)')
    out.sort(key=lambda line: line.sent_at)
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else SAMPLE_CHAT
    lines = build(random.Random(20251108))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(to_jsonl(line) + "\n" for line in lines), encoding="utf-8")
    span = (lines[-1].sent_at - lines[0].sent_at).total_seconds()
    print(f"wrote {len(lines)} lines over {span:.0f} s to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
