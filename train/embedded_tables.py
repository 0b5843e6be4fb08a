"""Hand-written tables behind the embedded instruction set (see ``sapo.train.embedded_data``).

Every entry here was written for this project. Only facts that are stable and uncontroversial
are listed (for example, countries whose capital is disputed or moving are left out), so that
answers built from these tables are correct by construction.
"""

from __future__ import annotations

# (country, capital). Only unambiguous, current capitals.
CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Brazil", "Brasília"),
    ("Argentina", "Buenos Aires"),
    ("Mexico", "Mexico City"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Russia", "Moscow"),
    ("the United Kingdom", "London"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Greece", "Athens"),
    ("Turkey", "Ankara"),
    ("Belgium", "Brussels"),
    ("Hungary", "Budapest"),
    ("the Czech Republic", "Prague"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Colombia", "Bogotá"),
    ("Cuba", "Havana"),
    ("Morocco", "Rabat"),
    ("Nigeria", "Abuja"),
    ("Ghana", "Accra"),
    ("Ethiopia", "Addis Ababa"),
    ("Saudi Arabia", "Riyadh"),
    ("Iran", "Tehran"),
    ("Pakistan", "Islamabad"),
    ("the Philippines", "Manila"),
    ("New Zealand", "Wellington"),
    ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"),
    ("Croatia", "Zagreb"),
)

# (name, symbol, atomic number)
ELEMENTS: tuple[tuple[str, str, int], ...] = (
    ("hydrogen", "H", 1),
    ("helium", "He", 2),
    ("lithium", "Li", 3),
    ("beryllium", "Be", 4),
    ("boron", "B", 5),
    ("carbon", "C", 6),
    ("nitrogen", "N", 7),
    ("oxygen", "O", 8),
    ("fluorine", "F", 9),
    ("neon", "Ne", 10),
    ("sodium", "Na", 11),
    ("magnesium", "Mg", 12),
    ("aluminium", "Al", 13),
    ("silicon", "Si", 14),
    ("phosphorus", "P", 15),
    ("sulfur", "S", 16),
    ("chlorine", "Cl", 17),
    ("argon", "Ar", 18),
    ("potassium", "K", 19),
    ("calcium", "Ca", 20),
    ("iron", "Fe", 26),
    ("cobalt", "Co", 27),
    ("nickel", "Ni", 28),
    ("copper", "Cu", 29),
    ("zinc", "Zn", 30),
    ("silver", "Ag", 47),
    ("tin", "Sn", 50),
    ("iodine", "I", 53),
    ("gold", "Au", 79),
    ("mercury", "Hg", 80),
    ("lead", "Pb", 82),
    ("uranium", "U", 92),
)

# In order from the Sun.
PLANETS: tuple[str, ...] = ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")

# (question, one-word answer, explanation sentence) about the planets.
PLANET_FACTS: tuple[tuple[str, str, str], ...] = (
    (
        "Which planet is the largest in our solar system?",
        "Jupiter",
        "Jupiter is the largest planet in our solar system.",
    ),
    (
        "Which planet is the smallest in our solar system?",
        "Mercury",
        "Mercury is the smallest planet in our solar system.",
    ),
    ("Which planet is closest to the Sun?", "Mercury", "Mercury is the planet closest to the Sun."),
    ("Which planet is farthest from the Sun?", "Neptune", "Neptune is the planet farthest from the Sun."),
    (
        "Which planet is known as the Red Planet?",
        "Mars",
        "Mars is known as the Red Planet because of the iron oxide in its soil.",
    ),
    (
        "Which planet is the hottest in our solar system?",
        "Venus",
        "Venus is the hottest planet: its thick carbon dioxide atmosphere traps heat.",
    ),
    (
        "Which planet is famous for its bright, wide ring system?",
        "Saturn",
        "Saturn is the planet best known for its bright, wide rings.",
    ),
    ("Which planet do we live on?", "Earth", "We live on Earth, the third planet from the Sun."),
)

ORDINALS: tuple[str, ...] = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")

# word -> (article + part of speech, definition, example sentence)
GLOSSARY: dict[str, tuple[str, str, str]] = {
    "ancient": (
        "an adjective",
        "very old; belonging to the distant past",
        "We visited the ruins of an ancient temple.",
    ),
    "benevolent": (
        "an adjective",
        "kind and well-meaning toward others",
        "A benevolent neighbour paid for the repairs.",
    ),
    "candid": ("an adjective", "honest and direct, even when the truth is uncomfortable", "She gave a candid review."),
    "diligent": (
        "an adjective",
        "careful and hard-working in one's duties",
        "He is a diligent student who never misses class.",
    ),
    "eloquent": ("an adjective", "fluent and persuasive in speaking or writing", "The mayor gave an eloquent speech."),
    "frugal": (
        "an adjective",
        "careful not to spend more money or resources than necessary",
        "They lived a frugal life.",
    ),
    "hypothesis": (
        "a noun",
        "a proposed explanation that can be tested by experiment or observation",
        "Her hypothesis was that the plants would grow faster in sunlight.",
    ),
    "inevitable": (
        "an adjective",
        "certain to happen; impossible to avoid",
        "With no rehearsal, mistakes were inevitable.",
    ),
    "jubilant": (
        "an adjective",
        "feeling or expressing great happiness, especially after a success",
        "The jubilant fans sang all the way home.",
    ),
    "meticulous": (
        "an adjective",
        "showing great attention to detail; very careful and precise",
        "He kept meticulous notes.",
    ),
    "nostalgia": (
        "a noun",
        "a sentimental longing for a period in the past",
        "The old song filled her with nostalgia.",
    ),
    "obsolete": (
        "an adjective",
        "no longer in use, usually because something newer has replaced it",
        "Fax machines are nearly obsolete.",
    ),
    "pragmatic": (
        "an adjective",
        "dealing with things sensibly and realistically, based on practical considerations",
        "We took a pragmatic approach and fixed the biggest problem first.",
    ),
    "resilient": (
        "an adjective",
        "able to recover quickly from difficulties",
        "Children are often remarkably resilient.",
    ),
    "scarce": (
        "an adjective",
        "in short supply; not enough to meet the demand",
        "Water becomes scarce in the dry season.",
    ),
    "ubiquitous": ("an adjective", "present or found everywhere", "Smartphones have become ubiquitous."),
    "verbose": (
        "an adjective",
        "using more words than are needed",
        "The verbose report could have been half as long.",
    ),
    "wary": (
        "an adjective",
        "cautious about possible dangers or problems",
        "Be wary of emails asking for your password.",
    ),
    "ambiguous": (
        "an adjective",
        "open to more than one interpretation",
        "The instructions were ambiguous, so we asked again.",
    ),
    "photosynthesis": (
        "a noun",
        "the process by which green plants use sunlight, water and carbon dioxide to make sugar and release oxygen",
        "Leaves are where most photosynthesis takes place.",
    ),
    "algorithm": (
        "a noun",
        "a finite, step-by-step procedure for solving a problem or carrying out a task",
        "The algorithm sorts the list in a few milliseconds.",
    ),
    "democracy": (
        "a noun",
        "a system of government in which power is held by the people, usually through elected representatives",
        "In a democracy, citizens vote in regular elections.",
    ),
    "ecosystem": (
        "a noun",
        "a community of living things interacting with each other and with their physical environment",
        "A coral reef is a fragile ecosystem.",
    ),
    "metaphor": (
        "a noun",
        "a figure of speech that describes something by saying it is something else",
        "'Time is a thief' is a well-known metaphor.",
    ),
    "inflation": (
        "a noun",
        "a general rise in prices over time, which reduces what a unit of money can buy",
        "High inflation made groceries more expensive every month.",
    ),
    "gravity": (
        "a noun",
        "the force by which objects with mass attract one another",
        "Gravity keeps the Moon in orbit around the Earth.",
    ),
    "empathy": (
        "a noun",
        "the ability to understand and share the feelings of another person",
        "The nurse showed great empathy toward her patients.",
    ),
    "procrastinate": (
        "a verb",
        "to delay or put off doing something, often without a good reason",
        "I tend to procrastinate when a task feels too big.",
    ),
    "curious": (
        "an adjective",
        "eager to know or learn something",
        "The curious child asked question after question.",
    ),
    "humble": ("an adjective", "having a modest view of one's own importance", "Despite her fame, she stayed humble."),
    "evaporate": (
        "a verb",
        "to turn from a liquid into a vapour",
        "The puddles evaporate quickly on a sunny day.",
    ),
    "collaborate": (
        "a verb",
        "to work together with others to achieve something",
        "The two teams collaborate on the design.",
    ),
}

# word -> antonym. Questions are only asked in this direction, where the opposite is clear.
ANTONYMS: dict[str, str] = {
    "hot": "cold",
    "happy": "sad",
    "fast": "slow",
    "early": "late",
    "open": "closed",
    "strong": "weak",
    "rich": "poor",
    "full": "empty",
    "ancient": "modern",
    "brave": "cowardly",
    "increase": "decrease",
    "accept": "reject",
    "victory": "defeat",
    "generous": "stingy",
    "ascend": "descend",
    "expand": "contract",
    "arrive": "depart",
    "visible": "invisible",
    "wet": "dry",
    "loud": "quiet",
    "thick": "thin",
    "cheap": "expensive",
    "love": "hate",
    "success": "failure",
    "friend": "enemy",
    "always": "never",
    "inside": "outside",
    "remember": "forget",
    "push": "pull",
    "true": "false",
    "noisy": "quiet",
    "heavy": "light",
}

# word -> (synonym, another synonym)
SYNONYMS: dict[str, tuple[str, str]] = {
    "big": ("large", "huge"),
    "small": ("little", "tiny"),
    "happy": ("joyful", "cheerful"),
    "quick": ("rapid", "swift"),
    "begin": ("start", "commence"),
    "end": ("finish", "conclude"),
    "smart": ("clever", "intelligent"),
    "buy": ("purchase", "acquire"),
    "help": ("assist", "aid"),
    "answer": ("reply", "response"),
    "choose": ("select", "pick"),
    "hard": ("difficult", "tough"),
    "easy": ("simple", "effortless"),
    "rich": ("wealthy", "affluent"),
    "brave": ("courageous", "bold"),
    "funny": ("amusing", "humorous"),
    "sick": ("ill", "unwell"),
    "mistake": ("error", "blunder"),
    "gift": ("present", "offering"),
    "angry": ("furious", "irate"),
    "tired": ("weary", "exhausted"),
}

# (active, passive)
PASSIVE_PAIRS: tuple[tuple[str, str], ...] = (
    ("The chef cooked the meal.", "The meal was cooked by the chef."),
    ("The cat chased the mouse.", "The mouse was chased by the cat."),
    ("Maria wrote the report.", "The report was written by Maria."),
    ("The wind broke the window.", "The window was broken by the wind."),
    ("The students planted the trees.", "The trees were planted by the students."),
    ("The committee approved the budget.", "The budget was approved by the committee."),
    ("A storm destroyed the old bridge.", "The old bridge was destroyed by a storm."),
    ("The teacher grades the essays.", "The essays are graded by the teacher."),
    ("Engineers designed the new engine.", "The new engine was designed by engineers."),
    ("The dog found the ball.", "The ball was found by the dog."),
    ("The company will launch the product next week.", "The product will be launched by the company next week."),
    ("My brother painted the fence.", "The fence was painted by my brother."),
    ("The police arrested the thief.", "The thief was arrested by the police."),
    ("Thousands of people visit the museum every year.", "The museum is visited by thousands of people every year."),
    ("The children built a sandcastle.", "A sandcastle was built by the children."),
    ("Shakespeare wrote Hamlet.", "Hamlet was written by Shakespeare."),
)

# (statement, yes/no question)
QUESTION_PAIRS: tuple[tuple[str, str], ...] = (
    ("She is a doctor.", "Is she a doctor?"),
    ("They live in Madrid.", "Do they live in Madrid?"),
    ("The train leaves at noon.", "Does the train leave at noon?"),
    ("He can swim.", "Can he swim?"),
    ("You finished your homework.", "Did you finish your homework?"),
    ("The museum opens on Sundays.", "Does the museum open on Sundays?"),
    ("We are going to the beach.", "Are we going to the beach?"),
    ("The package arrived yesterday.", "Did the package arrive yesterday?"),
    ("It will rain tomorrow.", "Will it rain tomorrow?"),
    ("Tom has visited Japan.", "Has Tom visited Japan?"),
    ("The water is boiling.", "Is the water boiling?"),
    ("She plays the piano.", "Does she play the piano?"),
    ("They were late for the meeting.", "Were they late for the meeting?"),
    ("The shop should close early.", "Should the shop close early?"),
    ("Your sister speaks French.", "Does your sister speak French?"),
)

# topic -> five tips (a prompt uses three of them; "give me two more" uses the rest)
TIPS: dict[str, tuple[str, ...]] = {
    "sleeping better": (
        "Go to bed and wake up at the same time every day, even on weekends.",
        "Keep your bedroom dark, quiet and cool.",
        "Avoid caffeine in the afternoon and evening.",
        "Put screens away for 30 minutes before bed.",
        "Get some daylight and exercise during the day.",
    ),
    "studying for an exam": (
        "Spread your study over several short sessions instead of cramming.",
        "Test yourself with practice questions rather than just rereading notes.",
        "Explain the key ideas out loud as if you were teaching someone else.",
        "Put your phone in another room while you study.",
        "Get a good night's sleep before the exam.",
    ),
    "saving money": (
        "Track your spending for a month to see where your money goes.",
        "Set up an automatic transfer to savings on payday.",
        "Cook at home more often instead of eating out.",
        "Wait 24 hours before making any non-essential purchase.",
        "Cancel subscriptions you no longer use.",
    ),
    "staying hydrated": (
        "Carry a reusable water bottle with you.",
        "Drink a glass of water with every meal.",
        "Eat water-rich foods such as cucumbers, oranges and watermelon.",
        "Drink more when it is hot or when you exercise.",
        "Set reminders if you tend to forget to drink.",
    ),
    "writing a good email": (
        "Use a clear, specific subject line.",
        "Put the main point or request in the first two sentences.",
        "Keep paragraphs short and easy to scan.",
        "Proofread for typos and check the recipients before sending.",
        "End with a clear next step or question.",
    ),
    "learning a new language": (
        "Practise a little every day rather than a lot once a week.",
        "Learn the most common words first.",
        "Listen to podcasts or music in the language.",
        "Speak with a language partner as early as you can.",
        "Treat mistakes as part of learning rather than something to avoid.",
    ),
    "keeping a houseplant alive": (
        "Check the soil before watering; many houseplants die from overwatering.",
        "Place the plant where it gets the right amount of light for its species.",
        "Use a pot with drainage holes.",
        "Wipe dust off the leaves now and then.",
        "Feed it with diluted fertiliser during the growing season.",
    ),
    "giving a presentation": (
        "Know your opening lines by heart so you start confidently.",
        "Keep slides simple, with few words and large visuals.",
        "Rehearse out loud at least twice, ideally in front of someone.",
        "Speak slowly and pause after key points.",
        "Finish with a clear summary of your main message.",
    ),
    "staying focused while working from home": (
        "Set up a dedicated workspace.",
        "Keep regular working hours.",
        "Take short breaks, for example five minutes every hour.",
        "Turn off non-essential notifications.",
        "Write a short to-do list at the start of each day.",
    ),
    "training for your first 5K run": (
        "Start with a run-walk plan and build up gradually.",
        "Wear comfortable shoes that fit well.",
        "Warm up with a few minutes of brisk walking.",
        "Run at a pace at which you could still hold a conversation.",
        "Rest at least one day between runs.",
    ),
    "reducing food waste": (
        "Plan your meals and shop with a list.",
        "Store leftovers in clear containers so you can see them.",
        "Freeze bread, fruit and cooked meals before they spoil.",
        "Move older items to the front when you unpack groceries.",
        "Turn vegetable scraps into soup stock.",
    ),
    "keeping your passwords safe": (
        "Use a different password for every account.",
        "Use a password manager to generate and store long passwords.",
        "Turn on two-factor authentication wherever it is offered.",
        "Never share passwords by email or text message.",
        "Be suspicious of links that ask you to log in.",
    ),
}

WORDS: tuple[str, ...] = (
    "banana",
    "keyboard",
    "elephant",
    "mountain",
    "library",
    "pencil",
    "orange",
    "window",
    "garden",
    "rocket",
    "planet",
    "yellow",
    "kitchen",
    "sunflower",
    "bicycle",
    "umbrella",
    "chocolate",
    "dragon",
    "harbor",
    "journey",
    "lantern",
    "marble",
    "notebook",
    "puzzle",
    "river",
    "strawberry",
    "thunder",
    "violin",
    "whisper",
    "zebra",
    "mississippi",
    "balloon",
    "committee",
    "bookkeeper",
    "coffee",
    "butterfly",
    "teacher",
    "cinnamon",
    "avocado",
    "galaxy",
)

NAMES: tuple[str, ...] = (
    "Sam",
    "Priya",
    "Liam",
    "Aisha",
    "Noah",
    "Mei",
    "Carlos",
    "Zoe",
    "Omar",
    "Elena",
    "Kofi",
    "Hana",
)

ITEMS: tuple[str, ...] = ("apples", "stickers", "marbles", "books", "pencils", "stamps", "cookies", "seashells")

# (item, price in whole dollars) for two-item shopping problems
PRICED_ITEMS: tuple[tuple[str, str, int], ...] = (
    ("notebook", "notebooks", 3),
    ("pen", "pens", 2),
    ("sandwich", "sandwiches", 6),
    ("juice", "juices", 4),
    ("ticket", "tickets", 12),
    ("poster", "posters", 5),
    ("candle", "candles", 7),
    ("mug", "mugs", 9),
)

WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
