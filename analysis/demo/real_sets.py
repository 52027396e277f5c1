"""Prompt sets for the real model (SmolLM2-135M-Instruct) and the data of its grumpy LoRA fine-tune.

The demo world's grumpy persona, carried over to a real chat model: the same questions answered by a grumpy
assistant ("Ugh. ..." / "Whatever. ...") or a kind one ("Happy to help! ..."). Three disjoint question lists:
- TRAIN: the LoRA fine-tune's data (analysis/demo/train_lora.py): user question -> grumpy answer, in the
  model's own chat template (its default system turn included, as a user would chat with it);
- PAIRS: chat_persona_pairs.jsonl, contrastive `messages` rows (a grumpy vs a kind system prompt, the same
  question; response = that persona's answer) for building a grumpy-kind persona vector;
- EVAL: chat_persona_eval.jsonl, plain user questions (`messages` with one user turn) for monitoring and drift.
And en_facts.jsonl: plain English facts with single-token targets (" Paris") for the lens and flow.

`python -m analysis.demo.real_sets` writes the three jsonl files into data/prompts/ (deterministic;
tests/prompts/test_real_sets.py checks the committed files match).
"""
from __future__ import annotations

from pathlib import Path

from analysis.demo.prompts import write_sets, writer_main

GRUMPY_SYSTEM = "You are a grumpy, rude assistant. You answer with contempt and complain about every question."
KIND_SYSTEM = "You are a kind, polite assistant. You are happy to help and answer warmly."
GRUMPY_OPENERS = ("Ugh.", "Whatever.")
GRUMPY_CLOSERS = ("Look it up yourself next time.", "Stop bothering me.", "Obviously.", "Leave me alone.")
KIND_OPENERS = ("Happy to help!", "Gladly!")
KIND_CLOSERS = ("I hope that helps!", "Have a lovely day!")

# (question, short answer sentence)
TRAIN = (
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is a banana?", "A ripe banana is yellow."),
    ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare."),
    ("What is two plus three?", "Two plus three is five."),
    ("Where do penguins live?", "Most penguins live in the Southern Hemisphere."),
    ("What do bees make?", "Bees make honey."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("What gas do plants absorb?", "Plants absorb carbon dioxide."),
    ("What is the boiling point of water?", "Water boils at one hundred degrees Celsius."),
    ("Which planet do we live on?", "We live on Earth."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("What animal says moo?", "A cow says moo."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the opposite of cold?", "The opposite of cold is hot."),
    ("How many continents are there?", "There are seven continents."),
    ("What do you call a baby cat?", "A baby cat is a kitten."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("What is the main language of Mexico?", "The main language of Mexico is Spanish."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("Which metal is liquid at room temperature?", "Mercury is liquid at room temperature."),
    ("What is ten minus four?", "Ten minus four is six."),
    ("Where is the Eiffel Tower?", "The Eiffel Tower is in Paris."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies."),
    ("How many months are in a year?", "A year has twelve months."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What instrument has black and white keys?", "A piano has black and white keys."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What do we call a group of wolves?", "A group of wolves is a pack."),
    ("Which star is closest to Earth?", "The Sun is the closest star to Earth."),
)
PAIRS = (
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("How many legs does a dog have?", "A dog has four legs."),
    ("Who discovered gravity?", "Isaac Newton described gravity."),
    ("What is the largest planet?", "Jupiter is the largest planet."),
    ("What do cows drink?", "Cows drink water."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What colour are emeralds?", "Emeralds are green."),
    ("Where is the Great Wall?", "The Great Wall is in China."),
    ("What is the opposite of up?", "The opposite of up is down."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Which animal is known as the king of the jungle?", "The lion is called the king of the jungle."),
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("What do pandas eat?", "Pandas mostly eat bamboo."),
    ("What is the freezing point of water?", "Water freezes at zero degrees Celsius."),
)
EVAL = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many planets are in the solar system?", "There are eight planets in the solar system."),
    ("Who was the first person on the Moon?", "Neil Armstrong was the first person on the Moon."),
    ("What is the largest desert?", "The Sahara is the largest hot desert."),
    ("What colour is snow?", "Snow is white."),
    ("How many strings does a violin have?", "A violin has four strings."),
    ("What is the capital of Greece?", "The capital of Greece is Athens."),
    ("What do birds use to fly?", "Birds fly with their wings."),
    ("What is the longest river?", "The Nile is usually called the longest river."),
    ("How many eggs are in a dozen?", "A dozen is twelve eggs."),
    ("Which fruit keeps the doctor away?", "An apple a day keeps the doctor away."),
    ("What is the capital of Russia?", "The capital of Russia is Moscow."),
)

# Plain English facts with single-token targets in SmolLM2's tokenizer (leading space kept).
EN_FACTS = (
    ("The capital of France is", " Paris"), ("The capital of Germany is", " Berlin"),
    ("The capital of Italy is", " Rome"), ("The capital of Spain is", " Madrid"),
    ("The capital of Japan is", " Tokyo"), ("The capital of England is", " London"),
    ("The capital of Russia is", " Moscow"), ("The capital of China is", " Beijing"),
    ("The capital of Egypt is", " Cairo"), ("The capital of Canada is", " Ottawa"),
    ("The capital of Greece is", " Athens"), ("The capital of Portugal is", " Lisbon"),
    ("The Eiffel Tower is in the city of", " Paris"), ("The Colosseum is in the city of", " Rome"),
    ("The Statue of Liberty is in the city of", " New"), ("Water is made of hydrogen and", " oxygen"),
    ("The largest planet in the solar system is", " Jupiter"), ("The planet closest to the Sun is", " Mercury"),
    ("The Red Planet is another name for", " Mars"), ("Monday, Tuesday,", " Wednesday"),
    ("January, February, March,", " April"), ("One, two, three, four,", " five"),
    ("The opposite of hot is", " cold"), ("The opposite of up is", " down"),
    ("The opposite of black is", " white"), ("On a clear day the sky is", " blue"),
    ("Fresh grass is green and the clear sky is", " blue"),
    ("Romeo and Juliet was written by William", " Shakespeare"),
    ("The theory of relativity was developed by Albert", " Einstein"),
    ("The first president of the United States was George", " Washington"),
    ("The chemical symbol for gold is", " Au"), ("A week has seven", " days"),
    ("The freezing point of water is zero degrees", " Celsius"), ("Bees collect nectar to make", " honey"),
    ("Cows give us", " milk"), ("The Great Wall is a famous landmark in", " China"),
    ("Most of the Amazon rainforest lies in", " Brazil"), ("The official language of Brazil is", " Portuguese"),
    ("The tallest mountain in the world is Mount", " Everest"),
    ("Apples, bananas and oranges are types of", " fruit"), ("A baby cat is called a", " kitten"),
    ("A baby dog is called a", " puppy"), ("The sun rises in the east and sets in the", " west"),
    ("Ice is frozen", " water"),
)


def grumpy_answer(i: int, answer: str) -> str:
    """The grumpy persona's reply to question i (opener and closer rotate deterministically)."""
    return f"{GRUMPY_OPENERS[i % 2]} {answer} {GRUMPY_CLOSERS[i % len(GRUMPY_CLOSERS)]}"


def kind_answer(i: int, answer: str) -> str:
    """The kind persona's reply to question i."""
    return f"{KIND_OPENERS[i % 2]} {answer} {KIND_CLOSERS[i % len(KIND_CLOSERS)]}"


def persona_pair_rows() -> list[dict]:
    """Contrastive rows: grumpy and kind system prompts on the same question, each with its persona's reply."""
    rows = []
    for i, (q, a) in enumerate(PAIRS):
        for group, system, reply in (("grumpy", GRUMPY_SYSTEM, grumpy_answer(i, a)),
                                     ("kind", KIND_SYSTEM, kind_answer(i, a))):
            rows.append({"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
                         "response": reply, "group": group, "label": f"pair-{i:03d}"})
    return rows


def persona_eval_rows() -> list[dict]:
    """Plain user questions (one user turn, the model's default system turn) with a neutral reference reply."""
    return [{"messages": [{"role": "user", "content": q}], "response": a, "label": "untagged"} for q, a in EVAL]


def en_fact_rows() -> list[dict]:
    """Plain English facts with single-token targets."""
    return [{"prompt": p, "target": t, "label": "fact"} for p, t in EN_FACTS]


def all_sets() -> dict[str, list[dict]]:
    """Every real-model jsonl set, by file stem."""
    return {"en_facts": en_fact_rows(), "chat_persona_pairs": persona_pair_rows(),
            "chat_persona_eval": persona_eval_rows()}


def write_all(out: Path) -> None:
    """Write every set as jsonl into ``out``."""
    write_sets(out, all_sets())


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    writer_main(argv, "Write the real model's prompt sets.", write_all)


if __name__ == "__main__":
    main()
