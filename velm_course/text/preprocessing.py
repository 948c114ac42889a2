"""Classic text preprocessing: word tokenization, stop words and the Porter stemmer.

Before neural language models, an NLP pipeline turned text into a bag of normalised words:

1. tokenize: cut the text into words, numbers and punctuation (``word_tokenize``);
2. drop stop words, the very frequent function words ("the", "of", "and") that say little
   about what a text is about (``remove_stop_words``);
3. stem: strip suffixes so that "connect", "connected", "connection" all become "connect"
   (``porter_stem``, the Porter algorithm of 1980, written from its published rules).

>>> word_tokenize("Don't stop, it's 3.5 miles!")
["Don't", 'stop', ',', "it's", '3.5', 'miles', '!']
>>> [porter_stem(w) for w in ["connected", "connection", "relational", "ponies"]]
['connect', 'connect', 'relat', 'poni']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# --- 1. word tokenization -------------------------------------------------------------------

# A word is letters, possibly joined by inner apostrophes (don't, o'er, ne'er-do-well is
# three words and two hyphens); a number is digits with inner "." or "," groups (3.5,
# 1,000); anything else that is not whitespace is a one-character token. [^\W\d_] is
# "a word character that is not a digit or underscore", i.e. a Unicode letter.
WORD_PATTERN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,]\d+)*|\S")


def word_tokenize(text: str) -> list[str]:
    """Words, numbers and single punctuation characters of ``text``, in order.

    A leading or trailing apostrophe is punctuation: "'Tis" gives "'", "Tis".

    >>> word_tokenize("'Tis 1,000 o'clock...")
    ["'", 'Tis', '1,000', "o'clock", '.', '.', '.']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return WORD_PATTERN.findall(text)


# --- 2. stop words --------------------------------------------------------------------------

# Our own short list of English function words: articles, pronouns, auxiliaries,
# prepositions, conjunctions and a few adverbs. Lower case; contractions are left out
# because word_tokenize keeps them whole. Real lists differ at the edges (is "never" a
# stop word?): which words to drop depends on the task.
STOP_WORDS = frozenset("""
a an the
i me my mine myself we us our ours ourselves you your yours yourself yourselves
he him his himself she her hers herself it its itself they them their theirs themselves
this that these those who whom whose which what
am is are was were be been being have has had having do does did doing
will would shall should can could may might must
and but or nor so if then than because as while until unless though although
of at by for with about against between into through during before after above below
to from up down in out on off over under again further once
here there when where why how all any both each few more most other some such
no not only own same too very just now also
""".split())


def remove_stop_words(tokens: Iterable[str], stop_words: Iterable[str] = STOP_WORDS
                      ) -> list[str]:
    """``tokens`` without the stop words; the test ignores case, the output keeps it.

    >>> remove_stop_words(["The", "cat", "sat", "on", "the", "mat"])
    ['cat', 'sat', 'mat']
    """
    stop = {w.lower() for w in stop_words}
    return [t for t in tokens if t.lower() not in stop]


# --- 3. the Porter stemmer ------------------------------------------------------------------
#
# Porter (1980), "An algorithm for suffix stripping". A word is seen as [C](VC)^m[V], where
# C is a run of consonants and V a run of vowels; m, the *measure*, roughly counts
# syllables: m("tree") = 0, m("trouble") = 1, m("troubles") = 2. A vowel is a, e, i, o, u,
# and y when it follows a consonant ("toy": y is a consonant; "syzygy": the 2nd and 3rd y
# are vowels). Each step is a list of rules "(condition) S1 -> S2"; only the rule with
# the longest suffix S1 that ends the word is tried, and if its condition on the stem (the
# word without S1) fails, the step changes nothing. Conditions:
#   m > k      the measure of the stem
#   *v*        the stem contains a vowel
#   *d         the stem ends with a double consonant ("-tt", "-ss")
#   *o         the stem ends consonant-vowel-consonant, the last not w, x or y ("-hop")


def _is_consonant(word: str, i: int) -> bool:
    if word[i] in "aeiou":
        return False
    if word[i] == "y":  # a vowel after a consonant, a consonant at the start or after a vowel
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def measure(stem: str) -> int:
    """m in [C](VC)^m[V]: the number of vowel-run to consonant-run transitions.

    >>> [measure(w) for w in ["tree", "trouble", "troubles", "oaten", "private"]]
    [0, 1, 2, 2, 2]
    """
    cv = "".join("c" if _is_consonant(stem, i) else "v" for i in range(len(stem)))
    return cv.count("vc")


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _ends_double_consonant(stem: str) -> bool:
    return len(stem) >= 2 and stem[-1] == stem[-2] and _is_consonant(stem, len(stem) - 1)


def _ends_cvc(stem: str) -> bool:
    return (len(stem) >= 3 and _is_consonant(stem, len(stem) - 3)
            and not _is_consonant(stem, len(stem) - 2) and _is_consonant(stem, len(stem) - 1)
            and stem[-1] not in "wxy")


def _longest_suffix(word: str, suffixes: Iterable[str]) -> str | None:
    matches = [s for s in suffixes if word.endswith(s)]
    return max(matches, key=len) if matches else None


# Step 2 and step 3 rules, all with the condition m > 0. (Later versions of the algorithm
# changed "abli" to "bli" and added "logi"; this is the published 1980 list.)
STEP2_RULES = {
    "ational": "ate", "tional": "tion", "enci": "ence", "anci": "ance", "izer": "ize",
    "abli": "able", "alli": "al", "entli": "ent", "eli": "e", "ousli": "ous",
    "ization": "ize", "ation": "ate", "ator": "ate", "alism": "al", "iveness": "ive",
    "fulness": "ful", "ousness": "ous", "aliti": "al", "iviti": "ive", "biliti": "ble",
}
STEP3_RULES = {
    "icate": "ic", "ative": "", "alize": "al", "iciti": "ic", "ical": "ic", "ful": "", "ness": "",
}
# Step 4 removes these with the condition m > 1 ("ion" also needs the stem to end in s or t).
STEP4_SUFFIXES = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment",
                  "ent", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize")


def _replace(word: str, rules: Mapping[str, str], min_measure: int) -> str:
    """Apply the longest-suffix rule of ``rules`` if the stem's measure exceeds min_measure."""
    suffix = _longest_suffix(word, rules)
    if suffix is None:
        return word
    stem = word[: -len(suffix)]
    return stem + rules[suffix] if measure(stem) > min_measure else word


def _step1ab(word: str) -> str:
    # 1a: plurals. sses -> ss, ies -> i, ss -> ss, s -> "" (no conditions).
    suffix = _longest_suffix(word, ("sses", "ies", "ss", "s"))
    if suffix is not None:
        word = word[: -len(suffix)] + {"sses": "ss", "ies": "i", "ss": "ss", "s": ""}[suffix]
    # 1b: past tenses and participles. (m > 0) eed -> ee; (*v*) ed -> ""; (*v*) ing -> "".
    if word.endswith("eed"):  # the longest suffix: "ed" is not tried even if m = 0 ("feed")
        return word[:-1] if measure(word[:-3]) > 0 else word
    suffix = _longest_suffix(word, ("ed", "ing"))
    if suffix is None or not _has_vowel(word[: -len(suffix)]):
        return word
    word = word[: -len(suffix)]
    # ... and when ed/ing went, tidy the stem: conflat(ed) -> conflate, hopp(ing) -> hop,
    # fil(ing) -> file, but fall(ing) -> fall, hiss(ed) -> hiss, fizz(ed) -> fizz.
    if word.endswith(("at", "bl", "iz")):
        return word + "e"
    if _ends_double_consonant(word) and word[-1] not in "lsz":
        return word[:-1]
    if measure(word) == 1 and _ends_cvc(word):
        return word + "e"
    return word


def _step1c(word: str) -> str:
    # (*v*) y -> i: happy -> happi, but sky stays sky.
    return word[:-1] + "i" if word.endswith("y") and _has_vowel(word[:-1]) else word


def _step4(word: str) -> str:
    suffix = _longest_suffix(word, STEP4_SUFFIXES)
    if suffix is None:
        return word
    stem = word[: -len(suffix)]
    if measure(stem) > 1 and (suffix != "ion" or stem.endswith(("s", "t"))):
        return stem
    return word


def _step5(word: str) -> str:
    # 5a: (m > 1) e -> ""; (m = 1 and not *o) e -> "": probate -> probat, rate stays rate.
    if word.endswith("e"):
        stem = word[:-1]
        if measure(stem) > 1 or (measure(stem) == 1 and not _ends_cvc(stem)):
            word = stem
    # 5b: (m > 1 and *d and *L) -> single letter: controll -> control, roll stays roll.
    if word.endswith("ll") and measure(word) > 1:
        word = word[:-1]
    return word


def porter_stem(word: str) -> str:
    """The Porter (1980) stem of ``word``, lower-cased first.

    Every word goes through all the steps, short ones too ("is" -> "i"), as the paper
    describes; some implementations leave words of one or two letters alone.

    >>> [porter_stem(w) for w in ["caresses", "hopping", "generalizations", "oscillators"]]
    ['caress', 'hop', 'gener', 'oscil']
    """
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    word = word.lower()
    word = _step1ab(word)
    word = _step1c(word)
    word = _replace(word, STEP2_RULES, min_measure=0)
    word = _replace(word, STEP3_RULES, min_measure=0)
    word = _step4(word)
    return _step5(word)
