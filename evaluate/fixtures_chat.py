"""Offline fixture sets for the judged benchmarks, written by this project in their exact formats.

They exist so MT-Bench and AlpacaEval run end to end with no hub (tests, the embedded
``reproduce`` scale); scores on them are pipeline checks and are labelled ``fixtures``.
The questions and reference answers are original (not taken from either benchmark).

- ``MTBENCH_FIXTURES``: FastChat ``question.jsonl`` rows (``question_id``, ``category``, two
  ``turns``), one per category, so both judge prompt kinds are exercised; reference answers
  (``reference_answer/gpt-4.jsonl`` rows) for the categories judged against one.
- ``ALPACA_FIXTURES``: AlpacaEval rows (``instruction``, ``output`` of the reference model);
  ``alpacaeval.py`` adds ``generator`` and ``dataset`` to match the format of
  ``alpaca_eval_gpt4_baseline.json`` and ``results/gpt4_1106_preview/model_outputs.json``.
"""

from __future__ import annotations

MTBENCH_FIXTURES = (
    {"question_id": 9001, "category": "writing",
     "turns": ["Write a four-line poem about a lighthouse keeper who is afraid of the dark.",
               "Now rewrite the poem so that every line ends with the same word."]},
    {"question_id": 9002, "category": "math",
     "turns": ["A train travels 180 km in 2 hours and then 120 km in 1.5 hours. What is its average speed "
               "for the whole trip?",
               "If it had travelled the second part at the same speed as the first part, how long would the "
               "whole trip have taken?"]},
    {"question_id": 9003, "category": "reasoning",
     "turns": ["Ana is taller than Ben. Ben is taller than Carla. Is Carla taller than Ana?",
               "Dev is shorter than Carla. Who is the tallest and who is the shortest of the four?"]},
    {"question_id": 9004, "category": "coding",
     "turns": ["Write a Python function that returns the second largest distinct number in a list, or None "
               "if there is none.",
               "Now make it work in a single pass over the list."]},
    {"question_id": 9005, "category": "extraction",
     "turns": ["From this sentence, list every city and the year mentioned with it as JSON: 'The fair moved "
               "from Lyon in 1998 to Porto in 2004, and then to Tartu in 2011.'",
               "Add a field with the number of years the fair stayed in each city before moving."]},
    {"question_id": 9006, "category": "humanities",
     "turns": ["In two sentences, explain why printing with movable type changed how ideas spread.",
               "Give one way the same pattern repeated with a later technology."]},
)  # fmt: skip

MTBENCH_FIXTURE_REFERENCES = (
    {"question_id": 9002, "answer_id": "fixture-9002", "model_id": "gpt-4",
     "choices": [{"index": 0, "turns": [
         "Total distance 180 + 120 = 300 km, total time 2 + 1.5 = 3.5 h, so the average speed is 300 / 3.5 "
         "= about 85.7 km/h.",
         "The first part's speed is 180 / 2 = 90 km/h. 120 km at 90 km/h takes 120 / 90 = 1.33 h, so the whole "
         "trip would take 2 + 1.33 = about 3.33 hours (3 h 20 min)."]}]},
    {"question_id": 9003, "answer_id": "fixture-9003", "model_id": "gpt-4",
     "choices": [{"index": 0, "turns": [
         "No. Ana > Ben > Carla, so Ana is taller than Carla.",
         "Ana > Ben > Carla > Dev: Ana is the tallest and Dev is the shortest."]}]},
    {"question_id": 9004, "answer_id": "fixture-9004", "model_id": "gpt-4",
     "choices": [{"index": 0, "turns": [
         "def second_largest(xs):\n    values = sorted(set(xs), reverse=True)\n    return values[1] if "
         "len(values) > 1 else None",
         "def second_largest(xs):\n    first = second = None\n    for x in xs:\n        if first is None or x > "
         "first:\n            first, second = x, first\n        elif x != first and (second is None or x > second):"
         "\n            second = x\n    return second"]}]},
)  # fmt: skip

ALPACA_FIXTURES = (
    {"instruction": "Suggest three names for a bakery that only sells bread made with rye.",
     "output": "1. Rye & Shine\n2. The Dark Crumb\n3. Rye Society"},
    {"instruction": "Explain in one paragraph why leaves change colour in autumn.",
     "output": "As days shorten, trees stop making chlorophyll, the green pigment that captures light. As it "
               "breaks down, yellow and orange carotenoids that were there all along become visible, and some "
               "trees also make red anthocyanins from sugars trapped in the leaf."},
    {"instruction": "Convert 72 degrees Fahrenheit to Celsius and show the formula.",
     "output": "C = (F - 32) x 5/9 = (72 - 32) x 5/9 = 40 x 5/9 = 22.2 degrees Celsius."},
    {"instruction": "Write a polite two-sentence message declining an invitation to a dinner party.",
     "output": "Thank you so much for inviting me to your dinner party; it sounds like a lovely evening. "
               "Unfortunately I have a prior commitment that night, but I hope we can get together soon."},
    {"instruction": "List the planets of the solar system in order from the Sun.",
     "output": "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune."},
    {"instruction": "Give two tips for remembering people's names.",
     "output": "1. Repeat the name back in conversation right after you hear it.\n2. Link the name to a vivid "
               "image or to someone you already know with the same name."},
)  # fmt: skip
