"""A hand-written glossary of Twitch emotes and chat slang, as mood priors.

Every entry maps a token (matched case-insensitively, surrounding punctuation ignored) or an emoji to weights over
the default categories ``hype funny love neutral sad angry``. The glossary is a *prior*: the head learns how much to
trust it. It matters most when few labels exist (cold start), where the emotes carry most of the meaning of a
three-word message.

Configured categories other than the defaults get a default category's weight when the names match; otherwise the
weight flows to the configured categories of the same valence (split evenly), and to ``neutral`` when none has it.

The entries cover the emotes of 2018 chat (Kappa, LUL, PogChamp, BibleThump, ...) and of today's 7TV/BTTV/FFZ chat
(KEKW, Sadge, catJAM, ICANT, Aware, Clueless, ...). Written by the chatmood authors from their own reading of how the
emotes are used; nothing here is copied from a dataset.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bot.config import DEFAULT_CATEGORIES, Category

DEFAULT_NAMES: tuple[str, ...] = tuple(c.name for c in DEFAULT_CATEGORIES)
_DEFAULT_VALENCE: dict[str, int] = {c.name: c.valence for c in DEFAULT_CATEGORIES}

# token -> "category[:weight] category[:weight] ...". Weights default to 1 and are normalised to sum 1.
_ENTRIES = """
# --- laughter
kekw funny        kekl funny        kekwait funny:0.6 neutral:0.4   omegalul funny     lulw funny
lul funny         lol funny         lmao funny        lmfao funny       rofl funny         xd funny
kek funny         haha funny        hahaha funny      hah funny         ahaha funny        jaja funny
4head funny       elegiggle funny   pepelaugh funny   pepelaughing funny  lulwut funny:0.6 neutral:0.4
zulul funny       haha funny        kekg funny        ooo funny:0.5 hype:0.5   dead funny:0.7 sad:0.3
lmaooo funny      icant funny       pepega funny:0.6 angry:0.4   kappa funny:0.7 neutral:0.3
keepo funny:0.6 neutral:0.4   kappapride funny:0.6 love:0.4   trihard funny:0.5 hype:0.5
haHAA funny:0.7 angry:0.3   forsene funny:0.7 neutral:0.3   omegadanse funny:0.6 hype:0.4
jebaited funny:0.8 neutral:0.2  troll funny:0.7 angry:0.3   trolldespair funny:0.6 sad:0.4
clueless funny:0.7 neutral:0.3   aware funny:0.5 sad:0.5   copium funny:0.5 sad:0.5   hopium hype:0.5 funny:0.5
bruh funny:0.5 angry:0.5   lmfaooo funny   xqcl love   xdd funny   kkona funny:0.6 hype:0.4
# --- hype and praise
pog hype          pogchamp hype     poggers hype      pogu hype         poggies hype       pogg hype
letsgo hype       lets hype:0.7 neutral:0.3   go hype:0.4 neutral:0.6   gogo hype     gogogo hype
hypers hype       hype hype         pagchomp hype     pagman hype       pogslide hype      pauseman hype:0.5 neutral:0.5
pausechamp hype:0.6 neutral:0.4   kreygasm hype:0.7 love:0.3   swiftrage hype:0.4 angry:0.6
clap hype:0.6 love:0.4   peepoclap hype:0.6 love:0.4   ez hype:0.6 angry:0.4   ezy hype:0.6 angry:0.4
ezclap hype:0.7 angry:0.3
gigachad hype     chad hype         based hype:0.7 funny:0.3   w hype     dub hype     insane hype       clutch hype
nice hype:0.6 love:0.4   wow hype:0.8 neutral:0.2   omg hype:0.6 neutral:0.4   holy hype   pogo hype:0.4 angry:0.6
gg hype:0.6 love:0.4   ggwp hype:0.5 love:0.5   wp hype:0.5 love:0.5   goat hype:0.7 love:0.3   cracked hype
catjam hype:0.7 love:0.3   ratjam hype:0.6 funny:0.4   pepejam hype:0.6 love:0.4   peped hype:0.6 funny:0.4
vibe hype:0.5 love:0.5   vibing hype:0.5 love:0.5   blobdance hype:0.6 love:0.4   forsenpls hype:0.6 funny:0.4
feelsstrongman hype:0.6 sad:0.4   feelsgoodman love:0.6 hype:0.4   feelsamazingman love:0.6 hype:0.4
seemsgood hype:0.5 love:0.5   batchest hype:0.6 funny:0.4   pogbones hype   eleague hype
huh neutral:0.5 funny:0.5   wait neutral   waytoodank funny:0.6 hype:0.4   gachigasm hype:0.5 funny:0.5
gachibass hype:0.6 funny:0.4   gachihyper hype:0.6 funny:0.4   pepegaclap hype:0.4 funny:0.6
# --- love and support
<3 love           ily love          love love         luv love          cute love          wholesome love
ty love           thx love          thanks love       thank love        tyty love          hug love
hugs love         peepohappy love   widepeepohappy love   peepolove love    peepoglad love    bibleluv love
heyguys love:0.5 neutral:0.5   vohiyo love:0.6 neutral:0.4   hi neutral:0.6 love:0.4   hello neutral:0.6 love:0.4
hey neutral:0.7 love:0.3   welcome love   congrats love:0.6 hype:0.4   gz love:0.5 hype:0.5   grats love:0.5 hype:0.5
sweet love:0.6 hype:0.4   beautiful love   adorable love   bless love   blessed love   kind love   pat love
peepopat love     pettheblob love   comfy love   okayge neutral:0.6 love:0.4   xqcl love   prayge love:0.5 sad:0.5
# --- sadness and sympathy
sadge sad         biblethump sad    pepehands sad     feelsbadman sad   widepeeposad sad   peeposad sad
rip sad           f sad:0.6 neutral:0.4   unlucky sad   sad sad   cry sad   crying sad   deadge sad:0.7 funny:0.3
notlikethis sad:0.6 angry:0.4   nooo sad:0.6 angry:0.4   no neutral:0.5 angry:0.3 sad:0.2   rip sad
sadcat sad   pepemeltdown sad:0.5 angry:0.5   despair sad   hasdespair sad   sadkek sad:0.5 funny:0.5
feelsweirdman angry:0.6 neutral:0.4   feelsokayman neutral:0.6 sad:0.4   lonely sad   miss sad:0.7 love:0.3
sorry sad:0.6 love:0.4   condolences sad   unfortunate sad   oof sad:0.6 funny:0.4   pain sad   hurts sad
l sad:0.4 angry:0.6   bedge neutral:0.6 sad:0.4   residentsleeper angry:0.6 sad:0.4   sleeper angry:0.5 sad:0.5
monkas sad:0.5 neutral:0.5   monkaw sad:0.5 neutral:0.5   monkaomega sad:0.5 neutral:0.5   wutface angry:0.5 sad:0.5
# --- anger, insults, frustration
weirdchamp angry  4weird angry      madge angry       dansgame angry    babyrage angry     cmonbruh angry
pogo angry:0.6 hype:0.4   stfu angry   wtf angry:0.7 neutral:0.3   trash angry   garbage angry   hate angry
hater angry   toxic angry   boring angry:0.6 sad:0.4   cringe angry:0.8 funny:0.2   worst angry   awful angry
terrible angry   dumb angry   stupid angry   idiot angry   noob angry   shit angry:0.7 funny:0.3
fuck angry:0.6 hype:0.2 funny:0.2   fucking angry:0.5 hype:0.3 funny:0.2   ban angry   scam angry   rigged angry
ratio angry:0.6 funny:0.4   mald angry:0.6 funny:0.4   malding angry:0.6 funny:0.4   mad angry   tilted angry
annoying angry   shut angry   kys angry   loser angry   clown angry:0.7 funny:0.3   ff angry:0.6 sad:0.4
smh angry:0.7 sad:0.3   ugh angry:0.6 sad:0.4   yikes angry:0.6 sad:0.4   fail angry:0.5 sad:0.5   bad angry
stare angry:0.5 neutral:0.5   susge neutral:0.6 angry:0.4   modcheck neutral   reported angry   bald angry:0.5 funny:0.5
# --- more of today's 7TV/BTTV/FFZ emotes (added for the six-category work; meanings as chat uses them)
pepela funny   bebela funny   lulE funny   lule funny   3head funny   5head funny:0.6 hype:0.4   xdd funny
grug funny   bboomer funny   peepogiggles funny   trollface funny   trolling funny   kekbye funny
aintnoway funny:0.5 hype:0.5   noway hype:0.6 funny:0.4   nowaying hype:0.6 funny:0.4   huhh neutral:0.6 funny:0.4
toobased hype:0.6 funny:0.4   hyperclap hype   hypers hype   pogcrazy hype   poggies hype   hoggers hype
drumming hype   guitartime hype:0.6 love:0.4   dankies hype:0.6 love:0.4   wicked hype   pogbones hype
ppoverheat hype   pphop hype:0.6 love:0.4   jigglin hype:0.6 funny:0.4   letsgo hype   gamba hype
gachihyper hype:0.6 funny:0.4   ayaya love:0.5 hype:0.5   swooner love   gladge love   peeposmile love
peeposhy love   peepoblush love   peepohug love   catkiss love   peepocomfy love   peepohey neutral:0.5 love:0.5
bleedpurple love:0.6 hype:0.4   feelsstrongman sad:0.5 love:0.5   painschamp sad:0.6 funny:0.4
unpoggers sad:0.7 angry:0.3   peepocry sad   sadgi sad   peepohands sad   o7 sad:0.6 love:0.4
reallymad angry:0.6 funny:0.4   4weirdw angry   diesofcringe angry:0.6 funny:0.4   pepespit angry
reeee angry   reee angry   ripbozo angry:0.6 funny:0.4   whatchamp angry:0.6 neutral:0.4   smhead angry
tssk angry   bruhmm angry:0.5 funny:0.5   weirddude angry   nerd angry:0.5 funny:0.5   stopbeingmean angry
yep neutral   nodders neutral   nopers neutral   chatting neutral   listening neutral   waiting neutral
noted neutral   erm neutral:0.6 funny:0.4   hmmge neutral   pepegehmm neutral   lookup neutral
peepoarrive neutral   peepoleave neutral   wokege neutral   susge neutral:0.6 funny:0.4
# --- words chat uses for contempt, praise, laughter and loss (added with the starter set's second round)
idiots angry   disgusting angry   gross angry:0.7 funny:0.3
pathetic angry   ridiculous angry:0.7 funny:0.3
disgrace angry   shameful angry   shame angry:0.6 sad:0.4   creep angry   creepy angry:0.6 neutral:0.4
weirdo angry:0.7 funny:0.3   liar angry   fraud angry   coward angry   gtfo angry
bs angry   bullshit angry   dammit angry:0.6 sad:0.4   pissed angry   furious angry   hypocrite angry
embarrassing angry:0.6 funny:0.4   dogshit angry   cope angry:0.5 funny:0.5   seethe angry:0.5 funny:0.5
bozo angry:0.6 funny:0.4   tf angry:0.6 neutral:0.4   ffs angry   wth angry:0.6 neutral:0.4   useless angry
lazy angry   braindead angry   racist angry   bigot angry   nonsense angry   unwatchable angry
mid angry:0.6 neutral:0.4   overrated angry   sellout angry   disappointing sad:0.5 angry:0.5
king love:0.5 hype:0.5   queen love:0.6 hype:0.4   proud love
appreciate love   appreciated love   respect love:0.6 hype:0.4   handsome love   pretty love   gorgeous love
precious love   angel love   babe love   tysm love   gn love:0.6 neutral:0.4   wb love:0.6 neutral:0.4
goodnight love:0.6 neutral:0.4   missed love   legend hype:0.6 love:0.4   hero love:0.6 hype:0.4
amazing hype:0.5 love:0.5   awesome hype:0.6 love:0.4   lovely love   wonderful love   fav love   favorite love
favourite love   sweetheart love   cutie love   hottie love   simp love:0.6 funny:0.4   mwah love   xoxo love
uwu love:0.6 funny:0.4   supportive love   grateful love   thankful love   stunning love:0.6 hype:0.4
hilarious funny   funny funny   jk funny   kidding funny:0.6 neutral:0.4   meme funny   memes funny
lolol funny   ayo funny:0.7 neutral:0.3   goofy funny   lolw funny
sheesh hype   yay hype:0.6 love:0.4   hyped hype   fire hype   lit hype
banger hype   peak hype   goated hype   massive hype   huge hype   clean hype   unreal hype   incredible hype
epic hype   sick hype:0.7 sad:0.3
sadly sad   depressing sad   depressed sad   heartbroken sad   tragic sad   unfortunately sad   sadness sad
cried sad   tears sad   devastated sad   gutted sad
# --- plain talk
chatting neutral  hmm neutral       hmmm neutral      monkahmm neutral   ok neutral   okay neutral   k neutral
what neutral      why neutral       who neutral       when neutral       how neutral   where neutral
yes neutral   yeah neutral   yep neutral   nope neutral   maybe neutral   true neutral   same neutral
question neutral   thinking neutral   think neutral   ? neutral   wuh neutral   ??? neutral
"""

_EMOJI = """
😂 funny   🤣 funny   💀 funny:0.8 sad:0.2   😆 funny   😹 funny   🤡 funny:0.5 angry:0.5
🔥 hype    🚀 hype    🎉 hype:0.6 love:0.4   👏 hype:0.6 love:0.4   💪 hype   😮 hype:0.6 neutral:0.4   🐐 hype
❤ love     ♥ love     💜 love    💙 love    💖 love    💕 love    🥰 love    😍 love    🥺 love:0.5 sad:0.5
🙏 love:0.6 sad:0.4   🤗 love   😊 love   🙂 love:0.5 neutral:0.5   ☺ love
😭 sad:0.6 funny:0.4   😢 sad   😞 sad   💔 sad   😔 sad   😿 sad
😡 angry   🤬 angry   😠 angry   🖕 angry   🙄 angry:0.7 neutral:0.3   😤 angry:0.6 hype:0.4
🤔 neutral   😐 neutral   ❓ neutral   👀 neutral
😒 angry:0.6 neutral:0.4   🤮 angry:0.6 funny:0.4   🤢 angry:0.6 funny:0.4   👎 angry   🥱 angry:0.6 neutral:0.4
😴 angry:0.5 neutral:0.5   💤 angry:0.5 neutral:0.5   😬 neutral:0.5 sad:0.5   🥲 sad:0.5 funny:0.5   😩 sad
😫 sad:0.6 angry:0.4   🫡 sad:0.5 love:0.5   🥹 love:0.6 sad:0.4   😳 neutral:0.5 funny:0.5   😅 funny:0.6 neutral:0.4
🙃 funny:0.6 neutral:0.4   😏 funny   😜 funny   🤪 funny   🤓 funny:0.6 angry:0.4   😎 hype   🙌 hype:0.6 love:0.4
💯 hype   🥳 hype:0.6 love:0.4   🤯 hype   😱 hype:0.5 sad:0.5   🫶 love   💗 love   💛 love
💚 love   🧡 love   🤍 love   😘 love   😻 love   👍 neutral:0.6 love:0.4   👋 neutral:0.6 love:0.4
"""

# Sub emotes: a channel's lower-case prefix and a capitalised name (``abbyHi``, ``abbyLove``, ``abbySalt``). The prefix
# belongs to one channel; the names are a convention shared across channels, so a name carries a mood the way a
# glossary word does (matched case-insensitively once the capital has split it off; only for tokens that are no
# glossary entry themselves).
_NAMES = """
love love   luv love   heart love   hearts love   hug love   hugs love   kiss love   blush love   pat love
cozy love   comfy love   cute love   shy love   smile love   wub love   bless love   flower love
happy love:0.6 hype:0.4   ty love   thanks love   sweat neutral:0.5 sad:0.5
hype hype   pog hype   pogg hype   pogu hype   poggers hype   w hype   win hype   fire hype   gg hype:0.7 love:0.3
clap hype:0.7 love:0.3   jam hype:0.7 love:0.3   dance hype:0.7 love:0.3   rave hype
cheer hype   lets hype   letsgo hype   gasm hype   wow hype   yay hype:0.6 love:0.4   party hype
goat hype   crown hype   king hype:0.6 love:0.4   ez hype:0.6 angry:0.4   hyper hype   pls hype:0.6 love:0.4
lul funny   lol funny   lulw funny   kek funny   kekw funny   laugh funny   lmao funny   derp funny
clown funny   goofy funny   troll funny   smug funny   giggle funny   kappa funny   xd funny
dank funny   pepega funny   lulwut funny   egg funny   bald funny:0.6 angry:0.4
sad sad   sadge sad   cry sad   tears sad   rip sad   sob sad   f sad   pain sad   hands sad   despair sad
dead sad:0.6 funny:0.4   lonely sad   sorry sad:0.6 love:0.4
rage angry   mad angry   madge angry   angry angry   salt angry   salty angry   grr angry   weird angry   mald angry
tilt angry   ban angry   pout angry   spit angry   ree angry   reee angry   annoyed angry   smh angry
hi neutral   hey neutral   hello neutral   wave neutral   lurk neutral   bye neutral   think neutral   hmm neutral
stare neutral   sip neutral   wiggle neutral   cup neutral   nod neutral   point neutral   sit neutral   look neutral
ghost neutral   flag neutral   ok neutral   yes neutral   no neutral   sus neutral   what neutral   huh neutral
eyes neutral   wait neutral   read neutral   notes neutral   boot neutral   mini neutral   bonk neutral:0.5 funny:0.5
"""
_SUB_EMOTE = re.compile(r"^[a-z][a-z0-9]{1,11}([A-Z][A-Za-z0-9]{0,11})$")
_STRIP = "!?.,:;\"'()[]{}*~`_-"
_RUN = re.compile(r"(.)\1{2,}")


def _parse(table: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for raw_line in table.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        i = 0
        while i < len(parts):
            token = parts[i].lower()
            i += 1
            weights: dict[str, float] = {}
            while i < len(parts) and parts[i].split(":")[0] in _DEFAULT_VALENCE:
                name, _, w = parts[i].partition(":")
                weights[name] = float(w) if w else 1.0
                i += 1
            if not weights:
                raise ValueError(f"glossary entry {token!r} has no categories")
            total = sum(weights.values())
            out[token] = {k: v / total for k, v in weights.items()}
    return out


GLOSSARY: Mapping[str, Mapping[str, float]] = _parse(_ENTRIES)
EMOJI: Mapping[str, Mapping[str, float]] = _parse(_EMOJI)
#: Sub-emote names (``Hi`` of ``abbyHi``), lower case.
EMOTE_NAMES: Mapping[str, Mapping[str, float]] = _parse(_NAMES)


def _lookup_token(token: str) -> Mapping[str, float] | None:
    low = token.lower()
    hit = GLOSSARY.get(low)
    if hit is None:
        stripped = low.strip(_STRIP)
        if stripped and stripped != low:
            hit = GLOSSARY.get(stripped)
            low = stripped
        if hit is None and low:
            # "LETSGOOOO", "POGGGG", "LULLLL": collapse letter runs and retry.
            squeezed = _RUN.sub(r"\1", low)
            hit = GLOSSARY.get(squeezed) or GLOSSARY.get(_RUN.sub(r"\1\1", low))
    if hit is None:
        sub = _SUB_EMOTE.match(token.strip(_STRIP))
        if sub is not None:
            name = sub.group(1).lower()
            hit = EMOTE_NAMES.get(name) or EMOTE_NAMES.get(_RUN.sub(r"\1", name))
    return hit


def matches(text: str) -> list[tuple[str, Mapping[str, float]]]:
    """The glossary entries found in ``text``, in order (tokens, then emoji)."""
    found: list[tuple[str, Mapping[str, float]]] = []
    for token in text.split():
        hit = _lookup_token(token)
        if hit is not None:
            found.append((token, hit))
    for ch in text:
        if ord(ch) < 0x2000:
            continue
        hit = EMOJI.get(ch) or EMOJI.get(unicodedata.normalize("NFKC", ch))
        if hit is not None:
            found.append((ch, hit))
    return found


@dataclass(frozen=True)
class GlossaryProjector:
    """Maps glossary weights (over the default names) onto the configured categories."""

    categories: tuple[Category, ...]

    def matrix(self) -> np.ndarray:
        """(len(DEFAULT_NAMES), k): row d spreads default category d over the configured ones."""
        names = [c.name for c in self.categories]
        m = np.zeros((len(DEFAULT_NAMES), len(names)), dtype=np.float64)
        for d, dname in enumerate(DEFAULT_NAMES):
            if dname in names:
                m[d, names.index(dname)] = 1.0
                continue
            same = [j for j, c in enumerate(self.categories) if c.valence == _DEFAULT_VALENCE[dname]]
            if not same:
                same = [names.index("neutral")] if "neutral" in names else list(range(len(names)))
            for j in same:
                m[d, j] = 1.0 / len(same)
        return m


def default_vector(weights: Mapping[str, float]) -> np.ndarray:
    """Glossary weights as a vector in ``DEFAULT_NAMES`` order."""
    return np.array([weights.get(n, 0.0) for n in DEFAULT_NAMES], dtype=np.float64)


def glossary_counts(texts: Sequence[str]) -> np.ndarray:
    """(n, len(DEFAULT_NAMES)): summed glossary weights per message over the default categories."""
    out = np.zeros((len(texts), len(DEFAULT_NAMES)), dtype=np.float64)
    for i, text in enumerate(texts):
        for _token, weights in matches(text):
            out[i] += default_vector(weights)
    return out


def prior(text: str, categories: Sequence[Category]) -> np.ndarray:
    """A probability vector over ``categories`` from the glossary alone (uniform-ish when nothing matches)."""
    counts = glossary_counts([text])[0] @ GlossaryProjector(tuple(categories)).matrix()
    neutral = [j for j, c in enumerate(categories) if c.name == "neutral"]
    smoothed = counts + 0.1
    if neutral:
        smoothed[neutral[0]] += 0.5
    return np.asarray(smoothed / smoothed.sum())
