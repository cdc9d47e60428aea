"""The closed vocabulary of the ``stories`` task, by part of speech, and its morphology.

Compact tables; plurals, third-person singular and past forms are derived by rule plus a short
irregular list, so every surface form is known exactly. Words whose form is ambiguous across
tenses (read/read, put/put) or whose article does not follow the spelling (an hour, a unicorn)
are left out, so agreement is decidable from the tokens alone: a/an by the next word's first
letter, number and tense by the verb form. ``lexicon(tier)`` returns the tier's word lists:
``small`` keeps every fourth word of each open class, ``medium`` every second, ``large``
all.
"""

from __future__ import annotations

from dataclasses import dataclass

FEMALE = """lily mia emma sara anna lucy ella zoe amy kate rosa nina lena maya ruby clara
eva grace hannah julia laura mary nora olivia paula rachel tina wendy alice bella chloe daisy
emily fiona gina holly iris jane kira lisa megan nancy penny sophie tessa una vera""".split()
MALE = """tom ben max leo jack sam_ noah finn luke jake owen adam ryan theo dan eric felix
george henry ivan james kevin liam mark nick oscar peter quinn ralph simon tim victor will
zack bob carl david evan frank greg harry ian joe karl lars mike ned oliver""".split()
NEUTRAL = """alex robin kim jordan casey riley taylor jamie morgan avery quinnie sky_ rowan
charlie""".split()
# trailing "_" marks a name that would clash with another word; it is dropped below
CHAR_KINDS = {"f": ["girl", "princess", "queen", "lady"], "m": ["boy", "prince", "king", "man"],
              "n": ["kid", "child", "puppy", "kitten", "bunny", "bear", "fox", "mouse", "frog",
                    "duck", "owl", "lion", "tiger", "pig", "robot", "dragon"]}
CHAR_ADJ = """little kind happy brave shy curious small young friendly clever quiet funny
gentle silly busy lonely cheerful sleepy proud helpful eager odd active""".split()
OBJECTS = """ball kite doll car boat book hat apple cake cookie box drum egg umbrella balloon
train teddy puzzle crayon flower shell stone ring key cup bell basket blanket bike bucket
candle coin crown feather flag guitar hammer jar lamp map mask necklace pencil piano pillow
plate rope scarf shoe sock spoon star sticker sword toy truck wagon ant_farm octopus
airplane anchor envelope eraser igloo ornament oven owl_toy ice_cream acorn
bottle brush button camera carrot chair clock comb fork glove hose jacket kettle ladder
leaf marble mirror mitten muffin net orange_toy pan pebble pie pizza radio robot_toy
rocket ruler sandwich shovel sled slide soap spinner sponge table tent ticket tray
trumpet tube vase violin watch wheel yoyo""".split()
# compounds with "_" are dropped: one token per word keeps the grammar simple
OBJ_ADJ = """red blue green yellow pink purple brown black white gray big small new shiny soft
tiny huge pretty warm cold round long short fluffy heavy light golden silver striped spotted
old orange empty icy odd ugly elegant amazing awesome enormous
interesting important open ordinary oval early easy
bright dark clean dirty dry wet fancy fast slow loud quiet_ sweet sour magic broken noisy
plain rough smooth sharp square strong thick thin tall wide wild wooden""".split()
PLACES = """park garden forest beach house school farm lake river hill town shop zoo castle
meadow pond field playground library kitchen yard cave island market mountain village""".split()
FEELINGS = """happy sad angry scared excited tired proud surprised worried glad upset calm
grumpy lonely_ nervous bored hungry sleepy_ thankful jolly""".split()
# activity verbs: (base, past); third-person singular by rule
ACTIVITIES = [("play", "played"), ("dance", "danced"), ("sing", "sang"), ("swim", "swam"),
              ("draw", "drew"), ("run", "ran"), ("jump", "jumped"), ("climb", "climbed"),
              ("paint", "painted"), ("bake", "baked"), ("walk", "walked"), ("skip", "skipped"),
              ("laugh", "laughed"), ("hop", "hopped"), ("fly", "flew"), ("build", "built"),
              ("clap", "clapped"), ("cook", "cooked"), ("dig", "dug"), ("fish", "fished"),
              ("hum", "hummed"), ("knit", "knitted"), ("listen", "listened"),
              ("march", "marched"), ("nap", "napped"), ("ride", "rode"), ("rest", "rested"),
              ("roll", "rolled"), ("shout", "shouted"), ("sleep", "slept"),
              ("smile", "smiled"), ("spin", "spun"), ("splash", "splashed"),
              ("study", "studied"), ("swing", "swung"), ("whistle", "whistled"),
              ("write", "wrote"), ("wave", "waved"), ("wait", "waited"), ("work", "worked")]
# verbs the plot templates use, (base, past)
PLOT_VERBS = [("be", "was"), ("have", "had"), ("want", "wanted"), ("love", "loved"),
              ("go", "went"), ("meet", "met"), ("show", "showed"), ("choose", "chose"),
              ("take", "took"), ("get", "got"), ("help", "helped"), ("find", "found"),
              ("fall", "fell"), ("say", "said"), ("learn", "learned"), ("see", "saw"),
              ("look", "looked"), ("try", "tried"), ("cry", "cried"), ("come", "came"),
              ("like", "liked"), ("hug", "hugged"), ("give", "gave"), ("fly", "flew"),
              ("roll", "rolled")]
PLURAL_IRREGULAR = {"mouse": "mice", "leaf": "leaves", "knife": "knives", "man": "men",
                    "child": "children", "octopus": "octopuses", "scarf": "scarves"}
VOWELS = set("aeiou")


def clean(words: list[str]) -> list[str]:
    return [w.rstrip("_") for w in words if "_" not in w.rstrip("_")]


def plural(noun: str) -> str:
    if noun in PLURAL_IRREGULAR:
        return PLURAL_IRREGULAR[noun]
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    irregular = {"be": "is", "have": "has", "go": "goes", "do": "does"}
    if verb in irregular:
        return irregular[verb]
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in VOWELS:
        return verb[:-1] + "ies"
    return verb + "s"


def article(word: str) -> str:
    """a/an by spelling: the vocabulary holds no word whose sound disagrees with it."""
    return "an" if word[0] in VOWELS else "a"


@dataclass(frozen=True)
class Verb:
    base: str
    past: str

    def form(self, tense: str, plural: bool) -> str:
        """The finite form after a subject of that number, in that tense."""
        if self.base == "be":
            return ("were" if plural else "was") if tense == "past" else (
                "are" if plural else "is")
        if tense == "past":
            return self.past
        return self.base if plural else third_person(self.base)

    def forms(self) -> set[str]:
        return {self.base, self.past, third_person(self.base)} | (
            {"was", "were", "is", "are"} if self.base == "be" else set())


def _part(words: list[str], tier: str) -> list[str]:
    # every k-th word, so each tier keeps some of every kind (vowel-initial adjectives too)
    return words[:: {"small": 4, "medium": 2, "large": 1}[tier]]


@dataclass(frozen=True)
class Lexicon:
    """One tier's open-class words; ``gender[name]`` is f, m or n (he, she, they)."""

    names: dict[str, str]
    kinds: dict[str, list[str]]
    char_adj: list[str]
    objects: list[str]
    obj_adj: list[str]
    places: list[str]
    feelings: list[str]
    activities: list[Verb]
    plot_verbs: dict[str, Verb]


def lexicon(tier: str) -> Lexicon:
    names = {}
    for g, words in (("f", FEMALE), ("m", MALE), ("n", NEUTRAL)):
        names.update({w: g for w in _part(clean(words), tier)})
    return Lexicon(
        names=names,
        kinds={g: k if g != "n" else _part(k, tier) for g, k in CHAR_KINDS.items()},
        char_adj=_part(CHAR_ADJ, tier),
        objects=_part(clean(OBJECTS), tier),
        obj_adj=_part(clean(OBJ_ADJ), tier),
        places=_part(PLACES, tier),
        feelings=_part(clean(FEELINGS), tier),
        activities=[Verb(b, p) for b, p in _part(ACTIVITIES, tier)],
        plot_verbs={b: Verb(b, p) for b, p in PLOT_VERBS},
    )


PRONOUNS = {"f": ("she", "her"), "m": ("he", "his"), "n": ("they", "their")}
PUNCT = [".", ",", "!", "?", '"']
SPECIALS = ["<pad>", "<s>", "</s>"]
