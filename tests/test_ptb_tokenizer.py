"""The pure-Python PTB tokenizer against the Java one that pycocoevalcap runs.

The main check: a seeded generator writes a few thousand captions full of what trips
tokenizers up (punctuation, clitics, hyphens, numbers, abbreviations, symbols, Unicode, British
spellings, odd whitespace, glued-together pieces), pycocoevalcap's PTBTokenizer tokenizes them
once per test session (one Java call), and every caption must come out the same. The other
tests pin single behaviours by hand, so a regression says what broke.
"""

import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velm_course.eval import ptb
from velm_course.eval.ptb import PTB_PUNCTUATION, ptb_tokenize, tokenize_caption

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed (pycocoevalcap's tokenizer is a jar)")

# -----------------------------------------------------------------------------
# the caption generator (also used by tests/test_coco_eval.py)

SUBJECTS = ["a man", "a woman", "two dogs", "the cat", "a group of people", "an old bus", "a little girl",
            "three zebras", "a plate of food", "the red car", "a skateboarder", "some kids", "a teddy bear",
            "an elephant", "a pizza", "the kitchen", "a person", "a baseball player", "a giraffe", "people"]
VERBS = ["is sitting on", "standing next to", "riding", "holding", "eating", "looking at", "walking down",
         "parked in front of", "laying on", "playing with", "flying over", "covered with", "near", "under",
         "carrying", "is", "are", "has", "with", "on top of"]
OBJECTS = ["a table", "the street", "a bench", "a frisbee", "a wave", "the beach", "a field", "a hill",
           "a wooden table", "the water", "a laptop", "a phone", "a bowl of fruit", "a sandwich", "a couch",
           "a bed", "a tree", "the sidewalk", "a fence", "a building", "a kite", "an umbrella"]

PUNCTUATION = [".", ",", ";", ":", "!", "?", "...", "--", "-", "'", '"', "``", "''", "`", "(", ")", "[", "]",
               "{", "}", "?!", "!!", "..", "....", ". . .", "?!?", ",,", "---"]
CLITICS = ["don't", "isn't", "can't", "won't", "it's", "man's", "they're", "we've", "you'll", "he'd", "I'm",
           "DON'T", "It's", "IT'S", "Isn't", "dogs'", "James'", "o'clock", "rock'n'roll", "y'all", "'em",
           "'90s", "ma'am", "cannot", "Cannot", "gonna", "wanna", "gotta", "'tis", "'twas", "ain't",
           "shouldn't've", "O'Neil", "d'Avignon", "let's", "who'd", "we'll", "'s", "n't", "'re", "'"]
HYPHENATED = ["t-shirt", "T-Shirt", "well-known", "two-year-old", "x-ray", "e-mail", "hot-dog",
              "double-decker", "black-and-white", "self-portrait", "pro-choice", "anti-war", "mid-air",
              "4-way", "3-D", "twenty-one", "up-to-date", "re-enter", "co-op", "-", "a-", "-ish"]
NUMBERS = ["3.5", "1,000", "10:30", "2", "15", "1999", "1/2", "3/4", "5 1/2", "2nd", "3rd", "100th",
           "50%", "$5", "$3.50", "-5", "+3", "12:00", "1990s", "5:30pm", "0.25", ".5", "1,000,000",
           "10,000.50", "3-4", "12/25/2019", "4x4", "007", "1st", "5km", "6ft", "2.5kg", "#1", "No. 5",
           "2-1", "360", "9/11", "10-15", "555-1234"]
ABBREVIATIONS = ["Mr.", "Mrs.", "Dr.", "St.", "Mt.", "Ave.", "etc.", "e.g.", "i.e.", "U.S.", "U.K.",
                 "a.m.", "p.m.", "vs.", "No.", "Inc.", "Jr.", "Co.", "approx.", "Fig.", "D.C.", "Jan.",
                 "Calif.", "Mr", "Dr", "U.S", "e.g", "Ltd.", "Ph.D.", "A.", "I.", "J.", "a.k.a.", "Mass.",
                 "mass.", "Wash.", "ft.", "est.", "Sept.", "Prof.", "Gen.", "Bros.", "Corp."]
SYMBOLS = ["$", "%", "&", "#", "@", "/", "*", "rock&roll", "AT&T", "and/or", "@home", "a*b", "5*3", "w/",
           "b&w", "Q&A", "S&P", "#hashtag", "@user", "**", "***", "+", "=", "~", "^", "|", "\\", "_",
           "©", "°", "×", "•", "·", "♥", "★", "→", "™", "®", "€", "£", "¥", "¢", "½", "¼", "<3", ":)",
           ":(", ";)", ":D", ":-)", ":P", "^_^", "x_x", "<", ">", "<<", ">>", "&amp;", "&quot;",
           "www.example.com", "http://coco.org/x", "cats.com", "user@example.com", "a.b", "foo.bar",
           "photo.jpg", "c#", "<b>", "</b>"]
UNICODE = ["café", "naïve", "jalapeño", "crème brûlée", "façade", "Zoë", "São Paulo", "Ångström",
           "‘", "’", "“", "”", "‘quoted’", "“quoted”", "don’t", "it’s", "–", "—", "…", "a–b", "wait…",
           "\u00a0", "😀", "🐶", "中文", "日本語", "北京", "Ελλάδα", "Москва", "über", "ÉCOLE", "señor",
           "«", "»", "„", "‹", "›", "한국어", "naïveté"]
BRITISH = ["colour", "grey", "centre", "favourite", "theatre", "neighbour", "organise", "aluminium", "tyre",
           "kerb", "Colour", "GREY", "colours", "realise", "travelling", "harbour", "metre", "doughnut"]
CATEGORIES = [PUNCTUATION, CLITICS, HYPHENATED, NUMBERS, ABBREVIATIONS, SYMBOLS, UNICODE, BRITISH]
# Whitespace between pieces. Left out on purpose: line breaks other than "\n" ("\r", "\v", "\f",
# U+0085, U+2028, U+2029). pycocoevalcap only replaces "\n", so Java would see an extra line and
# shift every later caption by one; ptb_tokenize reads them as spaces (see the ptb docstring and
# test_other_line_breaks_are_spaces below).
WHITESPACE = ["  ", "\t", " \u00a0 ", "   ", "\n"]
# Characters for the noisy captions: ASCII punctuation and Unicode from long-settled blocks (the
# lexer's letter table is Unicode 6's; letters Unicode added since are handled, see _NEWER_THAN_JAVA).
NOISE = (list(" .,;:!?'\"`()[]{}<>-_/\\*&%$#@+=~^|") + list("abcXYZ019")
         + list("’‘“”–—…\u00a0éßñÆøłŒΩπжЯ中文字한°±×÷→≈♥★✓½¼²€£¥¢§¶•·") + ["😀", "🐶"])


def _case(rng: random.Random, word: str) -> str:
    r = rng.random()
    return word.upper() if r < 0.08 else word.capitalize() if r < 0.2 else word


def _coco_like(rng: random.Random) -> str:
    """A COCO-like caption with pieces inserted, some glued to their neighbours."""
    r = rng.random()
    if r < 0.02:
        return ""
    words = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}".split()
    if r < 0.05:
        words = words[:1]  # very short
    elif r < 0.08:
        words = words * rng.randint(4, 12)  # very long, with repeated words
    pieces = []
    for word in words:
        pieces.append(_case(rng, word))
        if rng.random() < 0.35:
            pieces.append(rng.choice(rng.choice(CATEGORIES)))
    if rng.random() < 0.5:
        pieces.append(rng.choice([".", ".", "!", "?", "...", " .", ". ", "!!"]))
    text = ""
    for piece in pieces:
        sep = "" if not text else rng.choices([" ", "", rng.choice(WHITESPACE)], [0.75, 0.15, 0.10])[0]
        text += sep + piece
    if rng.random() < 0.5 and text:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.05:
        text = rng.choice(WHITESPACE) + text + rng.choice(WHITESPACE)
    return text


def _noisy(rng: random.Random) -> str:
    """Pieces, words and random character runs, glued or spaced at random."""
    pieces = []
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.3:
            pieces.append("".join(rng.choice(NOISE) for _ in range(rng.randint(1, 5))))
        elif r < 0.6:
            pieces.append(rng.choice(rng.choice(CATEGORIES)))
        else:
            pieces.append(_case(rng, rng.choice(" ".join(SUBJECTS + VERBS + OBJECTS).split())))
    return "".join(rng.choice(["", " ", " ", "  "]) + p for p in pieces)


def _soup(rng: random.Random) -> str:
    """Up to 40 characters: printable ASCII, vowels and spaces, NOISE, and fragments that start
    special tokens (URLs, clitics, entities, tags, smileys, ellipses, fractions)."""
    fragments = ["http://", "www.", ".com", "@", "n't", "'s", "U.S.", "&amp;", "<b>", "cannot", ":)", "...",
                 "--", "1/2", "3.5", "\u00ad", "\u0301", "\u200b", "\ufeff", "\x00", "\x7f", "\t"]
    out = []
    for _ in range(rng.randint(1, 40)):
        r = rng.random()
        if r < 0.5:
            out.append(chr(rng.randint(0x20, 0x7E)))
        elif r < 0.7:
            out.append(rng.choice("aeiouAEIOUstnlr  .'-,"))
        elif r < 0.9:
            out.append(rng.choice(NOISE))
        else:
            out.append(rng.choice(fragments))
    return "".join(out)


def random_captions(n: int, seed: int = 0) -> list[str]:
    """n captions: 70 % COCO-like with inserted pieces, 20 % noisy, 10 % character soup."""
    rng = random.Random(seed)
    makers = [_coco_like] * 7 + [_noisy] * 2 + [_soup]
    return [rng.choice(makers)(rng) for _ in range(n)]


# Cases that once told a rule of the Java lexer apart from a first guess at it, kept so that each
# stays checked: the lexer's exact lists (abbreviations, file extensions, smileys), its ellipsis
# of at most five dots, what follows an acronym, what a URL or e-mail address may contain, ...
TRICKY = [
    "Co.a Ltd.a Sept.a mass.fruit Ph.D.a", "Sr. Blvd. Rd. Foo", "approx. 5 Fig. 5 No. 5 art. 5 sec. 5",
    "......9 .......9 ........9 .....9", ". . . . . . . . . . . .  .. .", "o'O O'o O'ox no'o",
    "\xadD.C x", "\xadab.cd x", "0Z.c x 5a.jpg, 1.2.3.txt x 5a.bz2", "\xa0cats.com x", "q \xa0cats.com",
    "http://a.b/x\xa0", "http://a.b/x}y http://coco.org/x${Y-]", "let's^@?x a@b[c] d x@y.z, a <a@b.c>",
    "hashttp://coco.org/xthe", "two`Dogs A`plate", "c# C# f# c++ j#", "<a href='x' b=c d> <br/> </a b> <a_b>",
    "A.", "A", "a woman", "I saw A. The? yes I saw A. The\tyes", "U.S. The", "U.S.", "The dog", "it's",
    "they're", ":)a :)1 :-)) =\\_ (^_^) ^.^ x_x", "'twas 'tis dunno", "a🐶.com/😲x http:/ሶ/🏚coco.org/😲>",
    "I saw A. <b> x", "3AZtU.S. <b>",
]


def java_tokenize(captions: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer on the captions as one batch (one Java call)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({0: [{"caption": c} for c in captions]})[0]


# -----------------------------------------------------------------------------
# against the jar

CORPUS = TRICKY + random_captions(6000, seed=2026)


@pytest.fixture(scope="module")
def java_corpus():
    return java_tokenize(CORPUS)


@needs_java
def test_generated_corpus_equals_java(java_corpus):
    ours = ptb_tokenize(CORPUS)
    wrong = [(c, j, o) for c, j, o in zip(CORPUS, java_corpus, ours, strict=True) if j != o]
    assert not wrong, f"{len(wrong)} of {len(CORPUS)} captions differ, e.g. {wrong[:3]}"


def test_generated_corpus_covers_the_constructs():
    text = "\n".join(CORPUS)
    for piece in ["don't", "DON'T", "t-shirt", "10:30", "1,000", "e.g.", "U.S.", "$", "%", "&", "#", "@",
                  "/", "*", "café", "’", "“", "–", "—", "…", "\u00a0", "😀", "中文", "colour", "grey", "\t",
                  "(", "[", "{", '"', "?!", "Mr.", "..."]:
        assert piece in text, piece
    assert "" in CORPUS  # an empty caption
    assert max(len(c.split()) for c in CORPUS) > 40  # very long ones
    assert min(len(c.split()) for c in CORPUS if c) == 1  # very short ones


@needs_java
def test_lines_see_their_neighbours_like_java():
    # Java reads the batch as one file: some rules look past the end of a caption.
    # "a." before a line starting "The " ends a sentence (the "." is split off and deleted);
    # before "the" it is an abbreviation; "etc." is kept either way.
    batch = ["I saw a.", "The dog", "I saw a.", "the dog", "A.", "", "", "It is", "Calif.", "A", "U.S.", "x"]
    assert ptb_tokenize(batch) == java_tokenize(batch)
    assert ptb_tokenize(batch)[:3] == ["i saw a", "the dog", "i saw a."]


@needs_java
def test_other_line_breaks_are_spaces():
    # The documented difference: Java starts a new line at "\r", and pycocoevalcap then gives
    # every later caption its neighbour's tokens. We read it as a space.
    assert java_tokenize(["a\rb", "c"]) == ["a", "b"]
    assert ptb_tokenize(["a\rb", "c"]) == ["a b", "c"]


@needs_java
def test_single_caption_at_end_of_file():
    # tokenize_caption is the caption tokenized alone, so nothing follows it
    for caption in ["A.", "Co.", "U.S", "it's", "'99", ":)", 'a"', "5a.c", "Calif.", "I."]:
        assert tokenize_caption(caption) == java_tokenize([caption])[0], caption


# -----------------------------------------------------------------------------
# single behaviours, by hand (no Java needed)


def test_clitics_and_assimilations():
    assert tokenize_caption("Don't DON'T can't it's I'm we've you'll they're he'd") == \
        "do n't do n't ca n't it 's i 'm we 've you 'll they 're he 'd"
    # Java's quirk at the very end of the text: "'re" wants a non-letter after it, finds none,
    # and the quote rule takes "'" alone (deleted): "they re"
    assert tokenize_caption("they're") == "they re"
    assert tokenize_caption("cannot gonna Wanna 'tis 'twas") == "can not gon na wan na 't is 't was"
    assert tokenize_caption("o'clock rock'n'roll y'all 'em the dogs' toys") == "o'clock rock 'n' roll y' all 'em the dogs toys"


def test_brackets_stay_as_lowercased_escapes():
    # pycocoevalcap's punctuation list has -LRB- in capitals, but -lowerCase runs first
    assert tokenize_caption("a (red) [big] {old} car") == "a -lrb- red -rrb- -lsb- big -rsb- -lcb- old -rcb- car"
    assert {"-LRB-", "-RRB-", "-LCB-", "-RCB-"} <= PTB_PUNCTUATION


def test_quotes_dashes_and_ellipses_are_deleted():
    assert tokenize_caption('"hi" \'there\' ``x\'\' “curly” ‘too’ a -- b – c — d ... e … f') == "hi there x curly too a b c d e f"
    assert tokenize_caption("what?! wow!! ok?") == "what ?! wow !! ok"  # only single ? and ! are deleted


def test_numbers_abbreviations_and_symbols():
    assert tokenize_caption("3.5 1,000 10:30 $5 50% 5 1/2 ½") == "3.5 1,000 10:30 $ 5 50 % 5\u00a01/2 1/2"
    assert tokenize_caption("Mr. Smith of the U.S. e.g. at 5 p.m. No. 5 no. way") == \
        "mr. smith of the u.s. e.g. at 5 p.m. no. 5 no way"
    assert tokenize_caption("rock&roll AT&T and/or a*b #1 @home c# user@mail.com") == \
        "rock & roll at&t and/or a * b # 1 @home c# user@mail.com"


def test_unicode_and_no_americanisation():
    assert tokenize_caption("Café NAÏVE colour grey centre Ελλάδα 中文") == "café naïve colour grey centre ελλάδα 中文"
    assert tokenize_caption("a 😀 dog🐶s") == "a dog s"  # emoji are dropped, and split the word
    assert tokenize_caption(" a\tb\u00a0 c\n d  ") == "a b c d"


def test_shortcuts_equal_the_long_way():
    # the common-token shortcuts must change nothing: all rules at every position agree
    assert ptb._tokenize(CORPUS, shortcuts=True) == ptb._tokenize(CORPUS, shortcuts=False)


def test_tokenize_caption_is_a_batch_of_one():
    for caption in CORPUS[:200]:
        assert tokenize_caption(caption) == ptb_tokenize([caption])[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "cat", "Mr", "etc", "A", "I", "no", "cannot", "gonna", "Co", "x", "U"]),
                min_size=1, max_size=6),
       st.lists(st.sampled_from([" ", "  ", ", "]), min_size=6, max_size=6),
       st.sampled_from(["", ".", ",", " ", ". "]))
def test_plain_caption_shortcut_equals_the_lexer(words, seps, end):
    # captions of plain words take a shortcut; it must give what the full lexer gives
    caption = "".join(w + s for w, s in zip(words, seps, strict=False))[: -1] + end
    slow = [t.lower() for t in ptb._lex_line(caption, len(caption))]
    expected = " ".join(t for t in slow if t not in PTB_PUNCTUATION)
    shortcut = ptb._plain_caption(caption)
    assert shortcut is None or shortcut == expected
    assert tokenize_caption(caption) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="aBz19 .,;:!?'\"()-$&\n’…", max_size=40))
def test_output_is_lowercase_single_spaced_and_without_punctuation(text):
    out = tokenize_caption(text)
    assert out == out.lower()
    assert out == " ".join(out.split(" ")) and "  " not in out and out == out.strip(" ")
    assert not set(out.split()) & PTB_PUNCTUATION
