"""The word and fact families of the embedded instruction set (see ``sapo.train.embedded_data``):
capitals, chemical elements, planets, word games, definitions, antonyms and synonyms, sentence
rewriting, practical tips, and the IFEval-style formatting families. Each family is
``make(rng, turns) -> messages`` with ``turns`` user turns (1 unless its registry entry allows
follow-ups); every answer is looked up in, or computed from, the tables (``embedded/tables.json``).
"""

from __future__ import annotations

import random

from .embedded_common import (
    ANTONYMS,
    CAPITALS,
    ELEMENTS,
    GLOSSARY,
    ORDINALS,
    PASSIVE_PAIRS,
    PLANET_FACTS,
    PLANETS,
    QUESTION_PAIRS,
    SYNONYMS,
    TIPS,
    WORDS,
    Messages,
    _cap,
    _chat,
    _plural,
)


def _fact_qa(rng: random.Random) -> tuple[str, str]:
    """A short factual question and a one-sentence answer, for the formatting families."""
    kind = rng.choice(["capital", "element", "planet", "definition"])
    if kind == "capital":
        country, capital = rng.choice(CAPITALS)
        return f"What is the capital of {country}?", f"The capital of {country} is {capital}."
    if kind == "element":
        name, symbol, z = rng.choice(ELEMENTS)
        return f"What is the chemical symbol for {name}?", f"The chemical symbol for {name} is {symbol}."
    if kind == "planet":
        question, _, sentence = rng.choice(PLANET_FACTS)
        return question, sentence
    word = rng.choice(sorted(GLOSSARY))
    pos, definition, _ = GLOSSARY[word]
    return f'What does the word "{word}" mean?', f'"{_cap(word)}" is {pos} meaning {definition}.'


def make_capitals(rng: random.Random, turns: int) -> Messages:
    chosen = rng.sample(CAPITALS, turns)
    country, capital = chosen[0]
    q = rng.choice(
        [
            f"What is the capital of {country}?",
            f"What's the capital city of {country}?",
            f"Which city is the capital of {country}?",
            f"Can you tell me the capital of {country}?",
            f"Name the capital of {country}.",
        ]
    )
    a = rng.choice(
        [
            f"The capital of {country} is {capital}.",
            f"{capital} is the capital of {country}.",
            f"{_cap(country)}'s capital is {capital}.",
        ]
    )
    parts = [q, a]
    for country, capital in chosen[1:]:
        parts += [
            rng.choice([f"And what about {country}?", f"What about {country}?"]),
            f"The capital of {country} is {capital}.",
        ]
    return _chat(*parts)


def _element_qa(rng: random.Random, kind: str, element: tuple[str, str, int]) -> tuple[str, str, str]:
    """(question, answer, short follow-up question asking the same about this element)."""
    name, symbol, z = element
    if kind == "symbol":
        q = rng.choice(
            [f"What is the chemical symbol for {name}?", f"What symbol does {name} have on the periodic table?"]
        )
        a = rng.choice(
            [
                f"The chemical symbol for {name} is {symbol}.",
                f"{_cap(name)} is written {symbol} on the periodic table.",
            ]
        )
        return q, a, f"And for {name}?"
    if kind == "name":
        q = rng.choice(
            [f"Which element has the chemical symbol {symbol}?", f"What element does the symbol {symbol} stand for?"]
        )
        return q, f"{symbol} is the symbol for {name}.", f"What about {symbol}?"
    if kind == "number":
        q = rng.choice([f"What is the atomic number of {name}?", f"How many protons does an atom of {name} have?"])
        return (
            q,
            f"{_cap(name)} has atomic number {z}, so each of its atoms has {z} protons.",
            f"And {name}?",
        )
    return (
        f"Which element has atomic number {z}?",
        f"Atomic number {z} is {name}.",
        f"And atomic number {z}?",
    )


def make_elements(rng: random.Random, turns: int) -> Messages:
    kind = rng.choice(["symbol", "name", "number", "by_number"])
    picked = rng.sample(ELEMENTS, turns)
    q, a, _ = _element_qa(rng, kind, picked[0])
    parts = [q, a]
    name, symbol, z = picked[0]
    if turns > 1 and rng.random() < 0.5:
        # one follow-up about the same element, on what the first answer did not say
        if kind in ("symbol", "name"):
            parts += [
                rng.choice(["What is its atomic number?", "And its atomic number?"]),
                f"The atomic number of {name} is {z}.",
            ]
        else:
            parts += [
                rng.choice(["And what is its symbol?", "What's its chemical symbol?"]),
                f"Its symbol is {symbol}.",
            ]
        picked = picked[1:]
    for element in picked[1:]:
        _, a, short_q = _element_qa(rng, kind, element)
        parts += [short_q, a]
    return _chat(*parts)


def _planet_position(rng: random.Random, i: int) -> tuple[str, str]:
    if rng.random() < 0.5:
        q = rng.choice(
            [f"Which planet is {ORDINALS[i]} from the Sun?", f"Name the {ORDINALS[i]} planet from the Sun."]
        )
    else:
        q = rng.choice(
            [f"Where is {PLANETS[i]} in order from the Sun?", f"What number planet from the Sun is {PLANETS[i]}?"]
        )
    return q, f"{PLANETS[i]} is the {ORDINALS[i]} planet from the Sun."


def make_planets(rng: random.Random, turns: int) -> Messages:
    kind = rng.choice(["position", "position", "neighbour", "compare", "fact", "list"]) if turns == 1 else "position"
    i = rng.randrange(len(PLANETS))
    if kind == "position":
        q, a = _planet_position(rng, i)
    elif kind == "neighbour":
        i = rng.randrange(len(PLANETS) - 1)
        if rng.random() < 0.5:
            q = f"Which planet comes right after {PLANETS[i]}, moving away from the Sun?"
            a = f"{PLANETS[i + 1]} comes right after {PLANETS[i]}; it is the {ORDINALS[i + 1]} planet from the Sun."
        else:
            q = f"Which planet comes just before {PLANETS[i + 1]} in order from the Sun?"
            a = f"{PLANETS[i]} comes just before {PLANETS[i + 1]}; it is the {ORDINALS[i]} planet from the Sun."
    elif kind == "compare":
        i, j = rng.sample(range(len(PLANETS)), 2)
        q = f"Is {PLANETS[i]} closer to the Sun than {PLANETS[j]}?"
        verdict = "Yes" if i < j else "No"
        closer = PLANETS[min(i, j)]
        a = (
            f"{verdict}. {PLANETS[i]} is the {ORDINALS[i]} planet from the Sun "
            f"and {PLANETS[j]} is the {ORDINALS[j]}, so {closer} is closer."
        )
    elif kind == "fact":
        q, _, a = rng.choice(PLANET_FACTS)
    else:
        q = rng.choice(
            ["List the planets in order from the Sun.", "Can you name all eight planets, starting nearest the Sun?"]
        )
        a = "In order from the Sun:\n\n" + "\n".join(f"{k + 1}. {p}" for k, p in enumerate(PLANETS))
    parts = [q, a]
    for _ in range(turns - 1):
        if i < len(PLANETS) - 1 and (i == 0 or rng.random() < 0.7):
            i += 1
            parts += [
                "And which planet comes after it?",
                f"Next is {PLANETS[i]}, the {ORDINALS[i]} planet from the Sun.",
            ]
        else:
            i -= 1
            parts += [
                "Which planet comes just before it?",
                f"Just before it is {PLANETS[i]}, the {ORDINALS[i]} planet from the Sun.",
            ]
    return _chat(*parts)


def _word_op(rng: random.Random, op: str, w: str, letter: str) -> tuple[str, str]:
    if op == "reverse":
        q = rng.choice([f'Reverse the word "{w}".', f'What is "{w}" spelled backwards?', f'Write "{w}" backwards.'])
        return q, rng.choice([f'"{w}" reversed is "{w[::-1]}".', f'Spelled backwards, "{w}" becomes "{w[::-1]}".'])
    if op == "upper":
        q = rng.choice([f'Write "{w}" in uppercase.', f'Convert "{w}" to capital letters.'])
        return q, rng.choice([f'In uppercase, "{w}" is "{w.upper()}".', f"{w.upper()}"])
    if op == "length":
        q = rng.choice([f'How many letters are in the word "{w}"?', f'Count the letters in "{w}".'])
        return q, f'"{w}" has {len(w)} letters: {"-".join(w)}.'
    if op == "count":
        c = letter
        k = w.count(c)
        q = f'How many times does the letter "{c}" appear in "{w}"?'
        if k == 0:
            return q, f'The letter "{c}" does not appear in "{w}" ({"-".join(w)}), so the count is 0.'
        return q, f'Spelling it out: {"-".join(w)}. The letter "{c}" appears {_plural(k, "time")} in "{w}".'
    q = rng.choice(
        [f'What are the first and last letters of "{w}"?', f'Tell me the first and the last letter of the word "{w}".']
    )
    return q, f'The first letter of "{w}" is "{w[0]}" and the last letter is "{w[-1]}".'


def make_word_manipulation(rng: random.Random, turns: int) -> Messages:
    op = rng.choice(["reverse", "upper", "length", "count", "ends"])
    words = rng.sample(WORDS, turns)
    current = words[0]
    letter = rng.choice(sorted(set(current)) + ["e", "s"])  # for the "count" op, kept in follow-ups
    parts = list(_word_op(rng, op, current, letter))
    for w in words[1:]:
        if op != "length" and rng.random() < 0.5:
            # "it": the word just discussed; reversing or uppercasing keeps the letter count
            parts += ["How many letters does it have?", f'"{current}" has {len(current)} letters.']
            op = "length"
            continue
        current = w
        _, a = _word_op(rng, op, w, letter)
        parts += [f'Now do the same for "{w}".', a]
    return _chat(*parts)


def make_definitions(rng: random.Random, turns: int) -> Messages:
    word = rng.choice(sorted(GLOSSARY))
    pos, definition, example = GLOSSARY[word]
    q = rng.choice(
        [
            f'What does "{word}" mean?',
            f'Define the word "{word}".',
            f'What is the meaning of "{word}"?',
            f"Can you explain what {word} means?",
        ]
    )
    a = rng.choice(
        [
            f'"{_cap(word)}" is {pos} meaning {definition}. For example: "{example}"',
            f'The word "{word}" means {definition}.',
            f"{_cap(word)} ({pos.split()[1]}): {definition}.",
        ]
    )
    followups = [
        (rng.choice(["Can you use it in a sentence?", "Give me an example sentence."]), f'Sure: "{example}"'),
        ("What part of speech is it?", f'"{_cap(word)}" is {pos}.'),
    ]
    parts = [q, a]
    for fq, fa in rng.sample(followups, turns - 1):
        parts += [fq, fa]
    return _chat(*parts)


def _antonym_qa(rng: random.Random, word: str) -> tuple[str, str]:
    q = rng.choice(
        [f'What is the opposite of "{word}"?', f'Give me an antonym for "{word}".', f"What's the antonym of {word}?"]
    )
    return q, rng.choice(
        [f'The opposite of "{word}" is "{ANTONYMS[word]}".', f'An antonym for "{word}" is "{ANTONYMS[word]}".']
    )


def _synonym_qa(rng: random.Random, word: str) -> tuple[str, str]:
    s1, s2 = SYNONYMS[word]
    if rng.random() < 0.3:
        return f'Name two synonyms for "{word}".', f'Two synonyms for "{word}" are "{s1}" and "{s2}".'
    q = rng.choice([f'Give me a synonym for "{word}".', f'What is another word for "{word}"?'])
    return q, f'A common synonym for "{word}" is "{s1}".'


def make_antonyms_synonyms(rng: random.Random, turns: int) -> Messages:
    table, qa = (ANTONYMS, _antonym_qa) if rng.random() < 0.55 else (SYNONYMS, _synonym_qa)
    words = rng.sample(sorted(table), turns)
    parts = list(qa(rng, words[0]))
    for w in words[1:]:
        parts += [f'What about "{w}"?', qa(rng, w)[1]]
    return _chat(*parts)


def make_sentence_rewriting(rng: random.Random, turns: int) -> Messages:
    if rng.random() < 0.5:
        active, passive = rng.choice(PASSIVE_PAIRS)
        q = rng.choice(
            [
                f'Rewrite this sentence in the passive voice: "{active}"',
                f"Change this sentence to the passive voice: {active}",
                f'How would you say "{active}" in the passive voice?',
            ]
        )
        a = rng.choice(
            [
                f'In the passive voice: "{passive}"',
                f'"{passive}" The object of the original sentence becomes the subject.',
                passive,
            ]
        )
    else:
        statement, question = rng.choice(QUESTION_PAIRS)
        q = rng.choice(
            [
                f'Turn this statement into a yes/no question: "{statement}"',
                f"Rewrite this as a question: {statement}",
                f'How do I turn "{statement}" into a question?',
            ]
        )
        a = rng.choice([f'As a question: "{question}"', question])
    return _chat(q, a)


def make_tips(rng: random.Random, turns: int) -> Messages:
    topic = rng.choice(sorted(TIPS))
    tips = rng.sample(TIPS[topic], len(TIPS[topic]))
    q = rng.choice(
        [
            f"Give me three tips for {topic}.",
            f"What are three good tips for {topic}?",
            f"I need some advice on {topic}. Can you give me three tips?",
        ]
    )
    intro = rng.choice([f"Here are three tips for {topic}:", "Sure! Three things that help:", "Three practical tips:"])
    parts = [q, intro + "\n\n" + "\n".join(f"{k + 1}. {t}" for k, t in enumerate(tips[:3]))]
    if turns > 1:
        more = "\n".join(f"{k + 4}. {t}" for k, t in enumerate(tips[3:5]))
        parts += [rng.choice(["Can you give me two more?", "Any other tips?"]), "Here are two more:\n\n" + more]
    return _chat(*parts)


def make_format_one_word(rng: random.Random, turns: int) -> Messages:
    kind = rng.choice(["capital", "element", "planet", "antonym"])
    if kind == "capital":
        country, word = rng.choice([c for c in CAPITALS if " " not in c[1]])
        q = f"What is the capital of {country}?"
    elif kind == "element":
        name, symbol, _ = rng.choice(ELEMENTS)
        q, word = f"Which element has the symbol {symbol}?", _cap(name)
    elif kind == "planet":
        q, word, _ = rng.choice(PLANET_FACTS)
    else:
        key = rng.choice(sorted(ANTONYMS))
        q, word = f'What is the opposite of "{key}"?', _cap(ANTONYMS[key])
    prompt = rng.choice(
        [f"{q} Answer in one word.", f"{q} Reply with just one word.", f"Answer with a single word only. {q}"]
    )
    return _chat(prompt, word)


def make_format_all_caps(rng: random.Random, turns: int) -> Messages:
    q, a = _fact_qa(rng)
    prompt = rng.choice(
        [
            f"{q} Answer in all capital letters.",
            f"{q} Please respond using only uppercase letters.",
            f"Using only capital letters, answer this: {q}",
        ]
    )
    return _chat(prompt, a.upper())


def make_format_lowercase(rng: random.Random, turns: int) -> Messages:
    q, a = _fact_qa(rng)
    prompt = rng.choice(
        [
            f"{q} Your entire answer must be in lowercase letters.",
            f"{q} Please reply in all lowercase, with no capital letters.",
            f"Answer in lowercase letters only: {q}",
        ]
    )
    return _chat(prompt, a.lower())


def make_format_bullets(rng: random.Random, turns: int) -> Messages:
    k = rng.randint(2, 5)
    kind = rng.choice(["tips", "tips", "planets", "elements", "capitals"])
    if kind == "tips":
        topic = rng.choice(sorted(TIPS))
        task, items = f"Give me tips for {topic}.", rng.sample(TIPS[topic], k)
    elif kind == "planets":
        task, items = "Name some planets of our solar system.", rng.sample(PLANETS, k)
    elif kind == "elements":
        picked = rng.sample(ELEMENTS, k)
        task, items = "List some chemical elements with their symbols.", [f"{_cap(n)} ({s})" for n, s, _ in picked]
    else:
        picked = rng.sample(CAPITALS, k)
        task, items = "Name some countries and their capitals.", [f"{_cap(c)}: {cap}" for c, cap in picked]
    prompt = rng.choice(
        [f"{task} Use exactly {k} bullet points.", f"In exactly {k} bullet points: {task[0].lower()}{task[1:]}"]
    )
    marker = rng.choice(["* ", "- "])
    return _chat(prompt, "\n".join(marker + item for item in items))
