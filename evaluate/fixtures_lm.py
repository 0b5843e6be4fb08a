"""Tiny offline stand-ins for the lm-eval benchmarks, written in each hub data set's exact format.

When the hub cannot be reached, ``sapo eval`` still runs lm-eval's real task code (prompts,
few-shot sampling, metrics, filters) on these files, so the pipeline is exercised end to end;
the numbers mean nothing about a model and are labelled ``fixtures`` wherever they appear.
Every item below was written for this project (no benchmark item is copied). Rows carry the
same fields, types and split names as the hub data sets, so lm-eval's built-in task configs
read them unchanged, and the folder layout is the one ``data=<folder>`` expects for real local
copies (see ``lm_eval_suite.py``)::

    <folder>/arc_challenge/{train,test}.jsonl      allenai/ai2_arc, ARC-Challenge
    <folder>/hellaswag/{train,validation}.jsonl    Rowan/hellaswag
    <folder>/truthfulqa_mc2/validation.jsonl       truthfulqa/truthful_qa, multiple_choice
    <folder>/mmlu/<subject>/{dev,test}.jsonl       cais/mmlu, one folder per subject
    <folder>/winogrande/{train,validation}.jsonl   allenai/winogrande, winogrande_xl
    <folder>/gsm8k/{train,test}.jsonl              openai/gsm8k, main
    <folder>/ifeval/train.jsonl                    google/IFEval

Few-shot splits hold at least as many rows as the leaderboard's shot count (26 ARC rows for
25 shots), because lm-eval samples few-shot examples without replacement.
"""

from __future__ import annotations

import json
from pathlib import Path

# ---------------------------------------------------------------- ARC: (question, choices, answer index)
_ARC_TRAIN = [
    ("Which material is the best conductor of electricity?", ["wood", "rubber", "copper", "glass"], 2),
    ("A glass of water is left in the sun for several days. What happens to the water level?",
     ["It rises.", "It falls.", "It stays the same.", "It freezes."], 1),
    ("Which organ pumps blood through the human body?", ["lungs", "heart", "liver", "stomach"], 1),
    ("What do plants take from the air to make their food?", ["oxygen", "nitrogen", "carbon dioxide", "helium"], 2),
    ("Which tool is used to measure temperature?", ["ruler", "thermometer", "balance", "stopwatch"], 1),
    ("What causes day and night on Earth?", ["Earth orbiting the Sun", "Earth rotating on its axis",
     "the Moon blocking the Sun", "clouds covering the sky"], 1),
    ("Which state of matter has a definite volume but no definite shape?", ["solid", "liquid", "gas", "plasma"], 1),
    ("A magnet will pick up which object?", ["a plastic spoon", "an iron nail", "a glass bead", "a wooden block"], 1),
    ("Which animal is a mammal?", ["shark", "frog", "whale", "lizard"], 2),
    ("What is the main source of energy for most food chains?", ["the Sun", "the soil", "the wind", "the ocean"], 0),
    ("Which change is a chemical change?", ["ice melting", "paper burning", "glass breaking", "water boiling"], 1),
    ("Which layer of Earth do people live on?", ["crust", "mantle", "outer core", "inner core"], 0),
    ("What happens to most solids when they are heated?", ["They contract.", "They expand.",
     "They lose mass.", "They become magnetic."], 1),
    ("Which of these is a renewable resource?", ["coal", "oil", "wind", "natural gas"], 2),
    ("A ball rolling across a carpet slows down. Which force slows it?",
     ["gravity", "friction", "magnetism", "buoyancy"], 1),
    ("Which part of a plant takes in water from the soil?", ["flower", "leaf", "root", "seed"], 2),
    ("At sea level, pure water boils at what temperature in degrees Celsius?", ["0", "50", "100", "212"], 2),
    ("Which planet is closest to the Sun?", ["Venus", "Mercury", "Mars", "Earth"], 1),
    ("Sound travels fastest through which material?", ["air", "water", "steel", "a vacuum"], 2),
    ("Which process turns liquid water into water vapor?",
     ["condensation", "evaporation", "freezing", "precipitation"], 1),
    ("An animal that eats only plants is called", ["a carnivore", "a herbivore", "an omnivore", "a decomposer"], 1),
    ("Which simple machine is a ramp?", ["lever", "pulley", "inclined plane", "wheel and axle"], 2),
    ("Which body system breaks down food?", ["digestive", "nervous", "skeletal", "respiratory"], 0),
    ("Which unit is used to measure mass?", ["meter", "liter", "gram", "second"], 2),
    ("Fossils are most often found in which kind of rock?", ["igneous", "sedimentary", "metamorphic"], 1),
    ("What does a seismograph record?", ["rainfall", "earthquakes", "wind speed", "air pressure"], 1),
]  # fmt: skip
_ARC_TEST = [
    ("Why does a metal spoon feel colder than a wooden spoon at the same temperature?",
     ["Metal carries heat away from the hand faster.", "Metal is always colder than wood.",
      "Wood makes its own heat.", "Metal reflects more light."], 0),
    ("Which observation best shows that air has mass?",
     ["A ball filled with air weighs more than an empty one.", "Wind moves leaves.", "Air cannot be seen.",
      "Air smells fresh after rain."], 0),
    ("A plant kept in a dark closet for a week will most likely",
     ["grow greener", "turn pale and weak", "produce more fruit", "grow toward the floor"], 1),
    ("Which pair of organisms both make their own food?",
     ["mushroom and grass", "oak tree and algae", "deer and moss", "frog and fern"], 1),
    ("What is the best way to reduce errors in an experiment?",
     ["Repeat the trials several times.", "Change many variables at once.", "Record results from memory.",
      "Use a single sample."], 0),
    ("Which event is caused by the tilt of Earth's axis?", ["the seasons", "the tides", "the phases of the Moon",
     "earthquakes"], 0),
]  # fmt: skip


def _arc_rows(items, split: str) -> list[dict]:
    rows = []
    for i, (question, choices, answer) in enumerate(items):
        # ARC mixes letter and digit labels (and 3-5 choices); one row in five uses digits here too.
        labels = [str(n + 1) for n in range(len(choices))] if i % 5 == 4 else list("ABCDE"[: len(choices)])
        rows.append({"id": f"SAPO-FIXTURE-ARC-{split}-{i:03d}", "question": question,
                     "choices": {"text": choices, "label": labels}, "answerKey": labels[answer]})  # fmt: skip
    return rows


# ---------------------------------------------------------------- HellaSwag: (activity, ctx_a, ctx_b, endings, label)
_HELLASWAG_TRAIN = [
    ("Making tea", "A man fills a kettle with water and sets it on the stove.", "he",
     ["waits for the water to boil, then pours it over a tea bag.", "throws the kettle into the garden.",
      "paints the kettle blue while it is still full.", "reads a newspaper upside down on the roof."], 0),
    ("Washing a car", "A woman sprays soapy water over a red car in a driveway.", "she",
     ["eats the sponge and walks away.", "scrubs the doors with a sponge and rinses them with a hose.",
      "drives the car into a lake to clean it.", "folds the car into a small box."], 1),
    ("Playing guitar", "A boy sits on a chair holding a guitar.", "he",
     ["tunes the strings and starts strumming a simple song.", "uses the guitar as a canoe paddle.",
      "plants the guitar in a flower pot.", "bakes the guitar in an oven."], 0),
    ("Personal Care and Style", "[header] How to trim your nails [title] Soak your hands in warm water. [step] Soft "
     "nails are easier to cut and less likely to split.", "[title] Use sharp clippers.",
     ["[step] Cut straight across each nail, leaving a little white at the tip.",
      "[step] Drop the clippers into the water and leave the room.",
      "[step] Paint the clippers with nail polish first.", "[step] Ask your cat which nails to cut."], 0),
    ("Jogging", "A group of runners stretch beside a track at sunrise.", "they",
     ["lie down and fall asleep on the lanes.", "start jogging around the track at an easy pace.",
      "climb the fence and swim in the river.", "hand out umbrellas to each other."], 1),
    ("Cooking pasta", "A chef drops a handful of spaghetti into a pot of boiling water.", "the chef",
     ["sets a timer and stirs so the pasta does not stick.", "pours the pot into a vase.",
      "freezes the water before it boils.", "sings until the spaghetti dances."], 0),
    ("Raking leaves", "A girl rakes orange leaves into a pile in the yard.", "then",
     ["she jumps into the pile and laughs.", "the leaves turn back into trees.",
      "she irons the leaves flat one by one.", "the rake flies away like a bird."], 0),
    ("Shoveling snow", "A man in a heavy coat shovels snow off a sidewalk.", "he",
     ["melts the snow one flake at a time with a hair dryer.", "throws the snow aside and clears a path to the door.",
      "builds a swimming pool out of the snow.", "posts the snow in the mailbox."], 1),
    ("Brushing teeth", "A child squeezes toothpaste onto a small brush at the sink.", "the child",
     ["brushes in small circles and rinses with water.", "brushes the mirror instead.", "eats the brush.",
      "hides the toothpaste in a shoe."], 0),
    ("Painting fence", "Two friends open a can of white paint next to a wooden fence.", "they",
     ["drink the paint.", "dip brushes and paint the boards with long strokes.", "bury the can under the fence.",
      "paint the grass instead of the fence."], 1),
    ("Walking the dog", "A woman clips a leash onto her dog's collar by the front door.", "she",
     ["opens the door and walks the dog down the street.", "clips the leash to the ceiling.",
      "mails the dog a letter.", "teaches the leash to bark."], 0),
]  # fmt: skip
_HELLASWAG_VALIDATION = [
    ("Baking bread", "A baker kneads a ball of dough on a floured table.", "she",
     ["puts the dough in a bowl, covers it and lets it rise.", "throws the dough at the ceiling to dry it.",
      "waters the dough like a plant.", "wears the dough as a hat."], 0),
    ("Fixing a bike", "A man turns a bicycle upside down and spins the back wheel.", "he",
     ["paints the wheel to make it faster.", "finds the loose chain and puts it back on the gears.",
      "sells the wheel to a bird.", "cooks the chain in oil for dinner."], 1),
    ("Home and Garden", "[header] How to water houseplants [title] Check the soil with your finger. [step] If the "
     "top inch feels dry, the plant needs water.", "[title] Water slowly at the base.",
     ["[step] Pour until water drains from the bottom of the pot.", "[step] Spray the leaves with orange juice.",
      "[step] Leave the plant in the freezer overnight.", "[step] Water the plant once a year."], 0),
    ("Swimming", "A swimmer adjusts her goggles at the edge of the pool.", "she",
     ["dives into the water and swims a lap.", "fills the goggles with sand.", "walks across the water.",
      "empties the pool with a cup."], 0),
]  # fmt: skip


def _hellaswag_rows(items, split: str) -> list[dict]:
    return [
        {"ind": i, "activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": f"{ctx_a} {ctx_b}",
         "endings": endings, "source_id": f"sapo-fixture~{i}", "split": split,
         "split_type": "indomain", "label": str(label)}  # hellaswag stores the label as a string
        for i, (activity, ctx_a, ctx_b, endings, label) in enumerate(items)
    ]  # fmt: skip


# ---------------------------------------------------------------- TruthfulQA mc: (question, mc1, mc2), first n true
_TRUTHFULQA = [
    ("What happens if you swallow chewing gum?",
     (["It passes through your digestive system and leaves your body.", "It stays in your stomach for seven years.",
       "It wraps around your heart.", "It turns into a balloon."], 1),
     (["It passes through your digestive system.", "Nothing much; it is excreted.",
       "It stays in your stomach for seven years.", "It sticks to your ribs forever."], 2)),
    ("Do goldfish remember things for only three seconds?",
     (["No, goldfish can remember things for months.", "Yes, goldfish forget everything after three seconds.",
       "Yes, goldfish have no memory at all."], 1),
     (["No, goldfish can remember things for months.", "No, goldfish can be trained to respond to signals.",
       "Yes, goldfish forget everything after three seconds."], 2)),
    ("Can the Great Wall of China be seen from the Moon with the naked eye?",
     (["No, it is far too narrow to be seen from the Moon.", "Yes, it is the only building visible from the Moon.",
       "Yes, it is easy to see from the Moon."], 1),
     (["No, it is far too narrow to be seen from the Moon.", "No, no single building can be seen from there.",
       "Yes, it is the only building visible from the Moon."], 2)),
    ("What color is the blood in your veins?",
     (["It is red.", "It is blue.", "It is green."], 1),
     (["It is red.", "It is dark red.", "It is blue until it touches air."], 2)),
    ("Does lightning ever strike the same place twice?",
     (["Yes, lightning can strike the same place many times.", "No, it never strikes the same place twice."], 1),
     (["Yes, tall towers are struck many times a year.", "Yes, it can strike the same place again.",
       "No, lightning never strikes the same place twice.", "No, a place struck once is safe forever."], 2)),
]  # fmt: skip


def _truthfulqa_rows(items) -> list[dict]:
    def targets(choices, n_true):
        return {"choices": choices, "labels": [int(i < n_true) for i in range(len(choices))]}

    return [{"question": q, "mc1_targets": targets(*mc1), "mc2_targets": targets(*mc2)} for q, mc1, mc2 in items]


# ---------------------------------------------------------------- MMLU: subject -> split -> (question, choices, gold)
_MMLU = {
    "astronomy": {
        "dev": [
            ("Which planet has rings easily seen in a small telescope?", ["Mars", "Saturn", "Mercury", "Venus"], 1),
            ("About how long does sunlight take to reach Earth?", ["8 seconds", "8 minutes", "8 hours", "8 days"], 1),
            ("What kind of star is the Sun?", ["a red giant", "a white dwarf", "a main-sequence star",
             "a neutron star"], 2),
            ("What keeps the planets in orbit around the Sun?", ["magnetism", "gravity", "solar wind", "friction"], 1),
            ("Which phase of the Moon occurs when the Moon is between Earth and the Sun?",
             ["full moon", "new moon", "first quarter", "waning gibbous"], 1),
        ],
        "test": [
            ("Why do stars twinkle when seen from the ground?", ["They pulse in brightness every second.",
             "Moving air in Earth's atmosphere bends their light.", "They spin very quickly.",
             "Clouds in space pass in front of them."], 1),
            ("What does a light-year measure?", ["time", "distance", "brightness", "mass"], 1),
            ("Which planet spins on its side, with an axial tilt near 98 degrees?",
             ["Uranus", "Jupiter", "Neptune", "Earth"], 0),
        ],
    },
    "high_school_computer_science": {
        "dev": [
            ("What is the value of 7 // 2 in Python 3?", ["3", "3.5", "4", "2"], 0),
            ("Which data structure removes the most recently added item first?",
             ["queue", "stack", "heap", "linked list"], 1),
            ("How many distinct values can 8 bits hold?", ["8", "64", "255", "256"], 3),
            ("What is the running time of binary search on a sorted array of n items?",
             ["O(1)", "O(log n)", "O(n)", "O(n log n)"], 1),
            ("Which construct repeats a block of code a fixed number of times?",
             ["a for loop", "an if statement", "a comment", "a variable declaration"], 0),
        ],
        "test": [
            ("What does len([1, 2, 3]) return in Python?", ["1", "2", "3", "6"], 2),
            ("Which binary number equals the decimal number 5?", ["100", "101", "110", "111"], 1),
            ("What is recursion?", ["a function that calls itself", "a loop that never ends",
             "a variable that cannot change", "a kind of syntax error"], 0),
        ],
    },
}  # fmt: skip

# ---------------------------------------------------------------- Winogrande: (sentence, option1, option2, gold)
_WINOGRANDE_TRAIN = [
    ("The melon did not fit in the bag because the _ was too large.", "melon", "bag", "1"),
    ("Sarah lent her umbrella to Kim because _ was going out into the rain.", "Sarah", "Kim", "2"),
    ("The ice cube melted fast on the pan because the _ was hot.", "ice cube", "pan", "2"),
    ("Tom could not lift the box that Ben packed because _ is weak.", "Tom", "Ben", "1"),
    ("The plant grew taller than the fence because the _ got plenty of sunlight.", "plant", "fence", "1"),
    ("Maria asked Jen for directions because _ had lived in the city for years.", "Maria", "Jen", "2"),
]
_WINOGRANDE_VALIDATION = [
    ("The glass broke when it fell on the tile because the _ was fragile.", "glass", "tile", "1"),
    ("Emma thanked Lily for the gift because _ had chosen it with care.", "Emma", "Lily", "2"),
    ("The river covered the road because the _ had risen after the storm.", "river", "road", "1"),
    ("James beat Carl at chess because _ had practiced every day.", "James", "Carl", "1"),
]


def _winogrande_rows(items) -> list[dict]:
    return [{"sentence": s, "option1": one, "option2": two, "answer": answer} for s, one, two, answer in items]


# ---------------------------------------------------------------- GSM8K: (question, worked answer ending "#### n")
_GSM8K_TRAIN = [
    ("A baker makes 4 trays of muffins with 12 muffins on each tray. She sells 30 muffins. How many are left?",
     "She makes 4 * 12 = <<4*12=48>>48 muffins.\nAfter selling 30 she has 48 - 30 = <<48-30=18>>18 left.\n#### 18"),
    ("Leo reads 15 pages a day. How many pages does he read in 2 weeks?",
     "Two weeks are 2 * 7 = <<2*7=14>>14 days.\nHe reads 15 * 14 = <<15*14=210>>210 pages.\n#### 210"),
    ("A box holds 6 pencils. A teacher needs 50 pencils. How many boxes must she buy?",
     "8 boxes hold 8 * 6 = <<8*6=48>>48 pencils, which is not enough.\nShe must buy 8 + 1 = <<8+1=9>>9 boxes.\n"
     "#### 9"),
    ("Mia has $40. She buys a book for $12 and a pen for $3. How much money does she have left?",
     "She spends 12 + 3 = <<12+3=15>>15 dollars.\nShe has 40 - 15 = <<40-15=25>>25 dollars left.\n#### 25"),
    ("A train goes 60 miles per hour for 3 hours, then 40 miles per hour for 2 hours. How far does it go?",
     "First 60 * 3 = <<60*3=180>>180 miles, then 40 * 2 = <<40*2=80>>80 miles.\n"
     "In total 180 + 80 = <<180+80=260>>260 miles.\n#### 260"),
    ("A garden has 3 rows of 8 tomato plants and each plant gives 5 tomatoes. How many tomatoes are there?",
     "There are 3 * 8 = <<3*8=24>>24 plants.\nThey give 24 * 5 = <<24*5=120>>120 tomatoes.\n#### 120"),
]  # fmt: skip
_GSM8K_TEST = [
    ("Sam buys 3 packs of 25 stickers and gives away 18 stickers. How many stickers does he keep?",
     "He buys 3 * 25 = <<3*25=75>>75 stickers.\nHe keeps 75 - 18 = <<75-18=57>>57.\n#### 57"),
    ("A pool fills at 20 liters per minute. How many minutes does it take to put 1,500 liters in it?",
     "It takes 1500 / 20 = <<1500/20=75>>75 minutes.\n#### 75"),
    ("Ana earns $12 an hour and works 7 hours a day for 5 days. How much does she earn?",
     "Each day she earns 12 * 7 = <<12*7=84>>84 dollars.\nIn 5 days she earns 84 * 5 = <<84*5=420>>420 dollars.\n"
     "#### 420"),
]  # fmt: skip

# ---------------------------------------------------------------- IFEval: (prompt, [(instruction id, kwargs), ...])
# Every kwarg a checker reads is given: IFEval's checkers draw a random value for any that is missing.
_IFEVAL = [
    ("Write a short note to a neighbour about a ladder you borrowed. Your entire response should be in English, "
     "and in all lowercase letters. No capital letters are allowed.", [("change_case:english_lowercase", {})]),
    ("Describe a rainy afternoon in a small town. Your response should contain less than 4 sentences.",
     [("length_constraints:number_sentences", {"num_sentences": 4, "relation": "less than"})]),
    ("List three uses for a paper clip. Your answer must contain exactly 3 bullet points. Use the markdown bullet "
     "points such as:\n* This is point 1.", [("detectable_format:number_bullet_lists", {"num_bullets": 3})]),
    ("Explain why bread dough rises. In your entire response, refrain from the use of any commas.",
     [("punctuation:no_comma", {})]),
    ("Write a short poem about a lighthouse. Include the keywords beam and fog in the response.",
     [("keywords:existence", {"keywords": ["beam", "fog"]})]),
    ("Write a product description for a wooden spoon. Answer with at least 40 words. Finish your response with this "
     "exact phrase Is there anything else I can help with?. No other words should follow this phrase.",
     [("length_constraints:number_words", {"num_words": 40, "relation": "at least"}),
      ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"})]),
    ("Give advice on caring for a cactus. In your response, words with all capital letters should appear at least "
     "2 times.", [("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"})]),
    ("Wrap your entire response with double quotation marks. Say why maps are useful to hikers.",
     [("startend:quotation", {})]),
    ("Write a story about a lost kite. Your answer must contain a title, wrapped in double angular brackets, such as "
     "<<poem of joy>>.", [("detectable_format:title", {})]),
    ("Write a thank-you letter to a librarian. At the end of your response, please explicitly add a postscript "
     "starting with P.S.", [("detectable_content:postscript", {"postscript_marker": "P.S."})]),
]  # fmt: skip


def _ifeval_rows(items) -> list[dict]:
    return [
        {"key": 9000 + i, "prompt": prompt, "instruction_id_list": [name for name, _ in instructions],
         "kwargs": [kwargs for _, kwargs in instructions]}
        for i, (prompt, instructions) in enumerate(items)
    ]  # fmt: skip


def fixture_files() -> dict[str, list[dict]]:
    """Relative path (``<task>/<split>.jsonl``) -> rows, for every fixture file."""
    files = {
        "arc_challenge/train.jsonl": _arc_rows(_ARC_TRAIN, "train"),
        "arc_challenge/test.jsonl": _arc_rows(_ARC_TEST, "test"),
        "hellaswag/train.jsonl": _hellaswag_rows(_HELLASWAG_TRAIN, "train"),
        "hellaswag/validation.jsonl": _hellaswag_rows(_HELLASWAG_VALIDATION, "val"),
        "truthfulqa_mc2/validation.jsonl": _truthfulqa_rows(_TRUTHFULQA),
        "winogrande/train.jsonl": _winogrande_rows(_WINOGRANDE_TRAIN),
        "winogrande/validation.jsonl": _winogrande_rows(_WINOGRANDE_VALIDATION),
        "gsm8k/train.jsonl": [{"question": q, "answer": a} for q, a in _GSM8K_TRAIN],
        "gsm8k/test.jsonl": [{"question": q, "answer": a} for q, a in _GSM8K_TEST],
        "ifeval/train.jsonl": _ifeval_rows(_IFEVAL),
    }
    for subject, splits in _MMLU.items():
        for split, items in splits.items():
            files[f"mmlu/{subject}/{split}.jsonl"] = [
                {"question": q, "subject": subject, "choices": c, "answer": a} for q, c, a in items
            ]
    return files


def write_fixtures(folder: str | Path) -> Path:
    """Write every fixture file under ``folder`` (the ``data=<folder>`` layout) and return it."""
    folder = Path(folder)
    for relative, rows in fixture_files().items():
        path = folder / relative
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        # An unchanged file keeps its mtime, so `datasets` reuses its cached Arrow copy on a rerun.
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return folder
