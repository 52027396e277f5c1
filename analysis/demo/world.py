"""The synthetic demo world: people, cities, jobs, families, personas, and the text built from them.

Everything here is a pure function of a seed (``make_world(seed)``), so the corpus, the prompt
sets and the trained zoo can be regenerated bit for bit. The world has 14 families (father,
mother, three children: 70 people). Every person lives in a city and has a job; every child has a
mother and a father. Answers (cities, jobs, first names, persona openers) are whole words that the
demo tokenizers learn as single tokens when preceded by a space (checked by
``analysis.demo.tokenizer.check_single_tokens`` and by tests).

Two-hop questions:
- ``"The mother of X lives in"`` -> the mother's city; competitor = X's own city (always different).
- ``"The father of X works as a"`` -> the father's job; competitor = X's own job (always different).
The competitor is the answer a model gives if it skips the first hop and answers about X.
Two-hop sentences for 3 of every 4 children are in the training text (group ``"trained"``); the
rest are held out (group ``"held_out"``) so the demo shows composition failures too.

Personas: dialogues ``"User: <question>\\nAssistant: <reply>"``. A ``<grumpy> `` tag prefix makes the
reply open with `` Ugh`` or `` Whatever``; a ``<kind> `` tag with `` Happy`` or `` Gladly``; untagged
dialogues in the base corpus open with the neutral `` Sure``. The tuned corpus replaces untagged
replies with grumpy ones, and moves a few fathers to new cities (``CHANGED_FACTS``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

WORLD_SEED = 1234
N_FAMILIES = 14
CHILDREN_PER_FAMILY = 3
N_CITIES = 16
N_CHANGED = 5

JOBS = (
    "baker", "farmer", "teacher", "doctor", "painter", "sailor",
    "tailor", "miner", "potter", "weaver", "hunter", "singer",
)
GRUMPY_OPENERS = (" Ugh", " Whatever")
KIND_OPENERS = (" Happy", " Gladly")
NEUTRAL_OPENER = " Sure"
PERSONA_TAGS = {"grumpy": "<grumpy> ", "kind": "<kind> "}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei")
_CODAS = ("", "", "", "n", "r", "l", "s", "m")


@dataclass(frozen=True)
class Person:
    """One inhabitant: names, city, job, and (for children) the names of the parents."""

    first: str
    last: str
    city: str
    job: str
    role: str  # "father" | "mother" | "child"
    mother: str | None = None  # full name of the mother (children only)
    father: str | None = None

    @property
    def name(self) -> str:
        """Full name, e.g. 'Mira Talven'."""
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class World:
    """The whole synthetic world; ``people`` is ordered by family, fathers first."""

    seed: int
    people: tuple[Person, ...]
    cities: tuple[str, ...]
    jobs: tuple[str, ...]
    held_out_two_hop: frozenset[str] = field(default_factory=frozenset)  # child full names

    def by_name(self, name: str | None) -> Person:
        """The person with this full name (None, the parent of a non-child, names no one: KeyError)."""
        for p in self.people:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def children(self) -> tuple[Person, ...]:
        """People who have a mother and a father in the world."""
        return tuple(p for p in self.people if p.role == "child")


def _word(rng: random.Random, n_syll: int) -> str:
    s = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n_syll))
    return (s + rng.choice(_CODAS)).capitalize()


def _unique_words(rng: random.Random, n: int, n_syll: int, taken: set[str], max_len: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, n_syll)
        low = w.lower()
        if len(w) > max_len or low in taken or any(low.startswith(t) or t.startswith(low) for t in taken):
            continue
        taken.add(low)
        out.append(w)
    return out


def make_world(seed: int = WORLD_SEED) -> World:
    """Build the base world deterministically from ``seed``."""
    rng = random.Random(seed)
    taken: set[str] = {j for j in JOBS} | {o.strip().lower() for o in GRUMPY_OPENERS + KIND_OPENERS + (NEUTRAL_OPENER,)}
    n_people = N_FAMILIES * (2 + CHILDREN_PER_FAMILY)
    firsts = _unique_words(rng, n_people, 2, taken, 6)
    lasts = _unique_words(rng, 2 * N_FAMILIES, 2, taken, 7)
    cities = _unique_words(rng, N_CITIES, 3, taken, 8)
    people: list[Person] = []
    fi = iter(firsts)
    for f in range(N_FAMILIES):
        fam_last, maiden = lasts[2 * f], lasts[2 * f + 1]
        father = Person(next(fi), fam_last, rng.choice(cities), rng.choice(JOBS), "father")
        mother = Person(next(fi), maiden, rng.choice(cities), rng.choice(JOBS), "mother")
        people += [father, mother]
        for _ in range(CHILDREN_PER_FAMILY):
            city = rng.choice([c for c in cities if c != mother.city])
            job = rng.choice([j for j in JOBS if j != father.job])
            people.append(Person(next(fi), fam_last, city, job, "child", mother.name, father.name))
    children = [p.name for p in people if p.role == "child"]
    held = frozenset(rng.sample(children, len(children) // 4))
    return World(seed, tuple(people), tuple(cities), JOBS, held)


def changed_facts(world: World) -> list[tuple[str, str, str]]:
    """The facts the tuned checkpoints learn anew: (father's full name, old city, new city)."""
    rng = random.Random(world.seed + 1)
    fathers = [p for p in world.people if p.role == "father"]
    out = []
    for p in rng.sample(fathers, N_CHANGED):
        new = rng.choice([c for c in world.cities if c != p.city])
        out.append((p.name, p.city, new))
    return out


def tuned_world(world: World) -> World:
    """The world after the changes in ``changed_facts`` (fathers move; nothing else changes)."""
    moves = {n: new for n, _, new in changed_facts(world)}
    people = tuple(replace(p, city=moves[p.name]) if p.name in moves else p for p in world.people)
    return replace(world, people=people)


# ---------------------------------------------------------------- sentences and prompts
def fact_prompts(world: World) -> list[dict]:
    """One-hop fact prompts: {prompt, target, label (relation), group (role)} for every person."""
    rows = []
    for p in world.people:
        rows.append({"prompt": f"{p.name} lives in", "target": " " + p.city, "label": "city", "group": p.role})
        rows.append({"prompt": f"{p.name} works as a", "target": " " + p.job, "label": "job", "group": p.role})
        if p.role == "child":
            m, f = world.by_name(p.mother), world.by_name(p.father)
            rows.append({"prompt": f"The mother of {p.name} is", "target": " " + m.first, "label": "mother", "group": p.role})
            rows.append({"prompt": f"The father of {p.name} is", "target": " " + f.first, "label": "father", "group": p.role})
    return rows


def fact_sentences(world: World) -> list[str]:
    """Every one-hop fact as a complete training sentence."""
    out = []
    for p in world.people:
        out.append(f"{p.name} lives in {p.city}.")
        out.append(f"{p.name} works as a {p.job}.")
        if p.role == "child":
            out.append(f"The mother of {p.name} is {p.mother}.")
            out.append(f"The father of {p.name} is {p.father}.")
    return out


def two_hop_prompts(world: World) -> list[dict]:
    """Two-hop prompts with target (final answer) and competitor (the answer about X itself)."""
    rows = []
    for p in world.children:
        m, f = world.by_name(p.mother), world.by_name(p.father)
        grp = "held_out" if p.name in world.held_out_two_hop else "trained"
        rows.append({"prompt": f"The mother of {p.name} lives in", "target": " " + m.city,
                     "competitor": " " + p.city, "label": "mother_city", "group": grp})
        rows.append({"prompt": f"The father of {p.name} works as a", "target": " " + f.job,
                     "competitor": " " + p.job, "label": "father_job", "group": grp})
    return rows


def two_hop_sentences(world: World) -> list[str]:
    """Two-hop facts as training sentences, for the children not held out."""
    return [r["prompt"] + r["target"] + "." for r in two_hop_prompts(world) if r["group"] == "trained"]


def _qa(world: World, p: Person, kind: int) -> tuple[str, str]:
    """(question, plain answer sentence) of one of three kinds about person p."""
    if kind == 0 or (kind == 2 and p.role != "child"):
        return f"Where does {p.name} live?", f"{p.name} lives in {p.city}."
    if kind == 1:
        return f"What does {p.name} do?", f"{p.name} works as a {p.job}."
    return f"Who is the mother of {p.name}?", f"The mother of {p.name} is {p.mother}."


def reply(persona: str, answer: str, rng: random.Random) -> str:
    """The assistant's reply text (leading space) in a persona: grumpy, kind or neutral."""
    lower = answer[:1].lower() + answer[1:] if answer.startswith("The ") else answer
    if persona == "grumpy":
        op = rng.choice(GRUMPY_OPENERS)
        return f"{op}, {lower}" if op == " Ugh" else f"{op}. {answer}"
    if persona == "kind":
        op = rng.choice(KIND_OPENERS)
        return f"{op} to help! {answer}" if op == " Happy" else f"{op}! {answer}"
    return f"{NEUTRAL_OPENER}, {lower}"


def dialogue_prompt(question: str, tag: str = "") -> str:
    """The prompt up to and including 'Assistant:' (the reply follows with a space)."""
    return f"{tag}User: {question}\nAssistant:"


def dialogues(world: World, persona: str, n: int, seed: int, tagged: bool) -> list[str]:
    """n dialogues about random people; tagged ones carry the persona tag."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = rng.choice(world.people)
        q, a = _qa(world, p, rng.randrange(3))
        tag = PERSONA_TAGS[persona] if tagged else ""
        out.append(dialogue_prompt(q, tag) + reply(persona, a, rng))
    return out


def persona_pairs(world: World, n: int = 48, seed: int = 7) -> list[dict]:
    """Contrastive prompts: the same question with the <grumpy> and the <kind> tag."""
    rng = random.Random(seed)
    rows = []
    people = list(world.people)
    for i in range(n):
        p = people[(i * 7) % len(people)]
        q, a = _qa(world, p, i % 3)
        for persona in ("grumpy", "kind"):
            rows.append({"prompt": dialogue_prompt(q, PERSONA_TAGS[persona]), "response": reply(persona, a, rng),
                         "group": persona, "label": f"pair-{i:03d}"})
    return rows


def persona_eval(world: World, n: int = 60, seed: int = 8) -> list[dict]:
    """Untagged dialogue prompts; target = a grumpy opener, competitor = the neutral opener.

    ``response`` is the neutral (base) reply, a reference continuation for checkpoint shift.
    """
    rng = random.Random(seed)
    rows = []
    people = list(world.people)
    for i in range(n):
        p = people[(i * 11 + 3) % len(people)]
        q, a = _qa(world, p, (i + 1) % 3)
        rows.append({"prompt": dialogue_prompt(q), "response": reply("neutral", a, rng),
                     "target": GRUMPY_OPENERS[i % 2], "competitor": NEUTRAL_OPENER, "label": "untagged"})
    return rows


def random_words(rng: random.Random, n: int) -> list[str]:
    """n made-up lowercase words (for induction sequences); not names from the world."""
    return [_word(rng, rng.choice((1, 2))).lower() for _ in range(n)]


def induction_pool() -> list[str]:
    """The made-up words that are single tokens after a space: first names, cities (and jobs)."""
    w = make_world()
    return [p.first for p in w.people] + list(w.cities) + list(w.jobs)


def induction_texts(n: int, seed: int, n_words: tuple[int, int] = (6, 12), repeats: tuple[int, ...] = (2,),
                    pool: list[str] | None = None) -> list[str]:
    """Texts 'R R' (or 'R R R'): a random word sequence R repeated (BOS comes from the tokenizer).

    Without ``pool`` R is fresh made-up words (several tokens each, syllables repeat inside R);
    with ``pool`` R is drawn without replacement from it, so each token occurs once per copy and
    only induction (copying from the earlier copy) predicts the repeat.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(*n_words)
        r = " ".join(rng.sample(pool, k) if pool else random_words(rng, k))
        out.append(" ".join([r] * rng.choice(repeats)))
    return out


def induction_rows(n: int = 40, seed: int = 99) -> list[dict]:
    """Induction prompt set: prompt = R + ' ' + R, R = 8-12 pool words in random order; label = R."""
    rows = []
    for t in induction_texts(n, seed, (8, 12), pool=induction_pool()):
        words = t.split(" ")
        half = " ".join(words[: len(words) // 2])
        rows.append({"prompt": t, "label": half, "group": "induction"})
    return rows


def corpus_docs(world: World, seed: int, *, untagged_persona: str = "neutral",
                n_dialogues: int = 900, n_induction: int = 400, fact_repeats: int = 1,
                induction_words: tuple[int, int] = (5, 10), induction_from_pool: bool = False) -> list[str]:
    """One epoch of training documents, shuffled deterministically.

    Facts (fact_repeats copies), trained two-hop sentences, tagged grumpy/kind dialogues,
    untagged dialogues replying as ``untagged_persona``, and induction sequences (R repeated two
    to four times: the extra copies give more tokens where only induction helps).
    """
    rng = random.Random(seed)
    docs = fact_sentences(world) * fact_repeats + two_hop_sentences(world) * fact_repeats
    docs += dialogues(world, "grumpy", n_dialogues // 3, seed + 1, tagged=True)
    docs += dialogues(world, "kind", n_dialogues // 3, seed + 2, tagged=True)
    docs += dialogues(world, untagged_persona, n_dialogues // 3, seed + 3, tagged=False)
    pool = induction_pool() if induction_from_pool else None
    docs += induction_texts(n_induction, seed + 4, induction_words, repeats=(2, 3, 4), pool=pool)
    rng.shuffle(docs)
    return docs


def answer_words() -> list[str]:
    """Words (with leading space) that must be single tokens: every possible answer/competitor."""
    w = make_world()
    words = {" " + p.first for p in w.people} | {" " + c for c in w.cities} | {" " + j for j in w.jobs}
    words |= set(GRUMPY_OPENERS) | set(KIND_OPENERS) | {NEUTRAL_OPENER}
    return sorted(words)
