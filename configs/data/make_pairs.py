"""Write configs/data/pairs.jsonl: prompt/completion pairs a tiny model can learn (deterministic).

Three small tasks a byte-level model picks up in a few hundred steps: spell a word in
capitals, continue a counting sequence, and name an animal's sound. Run it again to
regenerate the file bit for bit: ``python configs/data/make_pairs.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("apple river stone cloud maple tiger lemon ocean piano candle forest rocket silver garden winter "
         "bridge planet castle pepper marble shadow falcon velvet copper meadow harbor lantern orchid").split()
SOUNDS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "owl": "hoot", "lion": "roar",
          "horse": "neigh", "pig": "oink", "frog": "ribbit", "bee": "buzz", "mouse": "squeak"}


def pairs(count: int = 400, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            word = rng.choice(WORDS)
            out.append({"prompt": f"Shout the word {word}:", "completion": f" {word.upper()}!"})
        elif kind == 1:
            start = rng.randrange(1, 60)
            out.append({"prompt": f"Count on from {start}:", "completion": " " + " ".join(str(start + i) for i in range(1, 5))})
        else:
            animal = rng.choice(sorted(SOUNDS))
            out.append({"prompt": f"What does the {animal} say?", "completion": f" The {animal} says {SOUNDS[animal]}."})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("pairs.jsonl")
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs()))
    print(f"wrote {path}")
