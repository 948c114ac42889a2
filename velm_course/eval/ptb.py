"""The tokenizer of the COCO caption evaluation, in pure Python: Stanford's PTBTokenizer.

pycocoevalcap does not score raw captions. Its ``PTBTokenizer`` writes every caption of a
batch on its own line of a file, runs Stanford CoreNLP 3.4.1's ``PTBTokenizer`` (Java) on it
with ``-preserveLines -lowerCase``, and deletes the tokens in :data:`PTB_PUNCTUATION` from each
output line. :func:`ptb_tokenize` does the same without Java, with the same output.

What the Java tokenizer does, and therefore what this module does:

- it is a *lexer*: at each position it tries all its rules (words, numbers, clitics,
  abbreviations, URLs, quotes, emoticons, ...) and takes the LONGEST match; a tie goes to the
  rule listed first. Some rules also look at what follows without consuming it ("U.S." before
  " The" ends a sentence), even into the next caption of the batch;
- clitics are split off: "don't" -> "do n't", "it's" -> "it 's", "cannot" -> "can not",
  "gonna" -> "gon na";
- brackets become -LRB- -RRB- -LSB- -RSB- -LCB- -RCB-, and since ``-lowerCase`` applies to them
  too, pycocoevalcap's punctuation list (which has the upper-case forms) never removes them:
  "(red)" -> "-lrb- red -rrb-" in every COCO score ever published;
- quotes become `` and '' (removed), dashes and en/em dashes "--" (removed), "…" "..."
  (removed); "?!" and "!!" stay (only single "?" and "!" are in the list);
- no Americanisation in 3.4.1: "colour" and "grey" stay as they are;
- characters no rule knows are dropped, emoji among them; they still separate the text around
  them ("dog🐶s" -> "dog s").

The rules were reconstructed from the published lexer specifications of CoreNLP around that
version and then checked character by character against the 3.4.1 jar on millions of generated
captions (tests/test_ptb_tokenizer.py keeps a few thousand of them as a regression test).

Known differences, which the test corpus leaves out on purpose:

- a line break other than "\n" inside a caption ("\r", "\v", "\f", U+0085, U+2028, U+2029):
  pycocoevalcap replaces only "\n" by a space, so Java sees an extra line and every later
  caption of the batch gets its neighbour's tokens. We read these characters as spaces;
- the Greek capital sigma: Java lower-cases it to the final form "ς" when a cased letter comes
  earlier in the same word ("AB6Σ" -> "ab6ς"), Python only when one comes right before it
  (symbols between count as nothing), so they disagree next to digits and symbols;
- an SGML tag whose quoted attribute value runs over into a later caption (Java makes one token
  across the captions);
- letters are those of Python's Unicode tables minus the ones added after the lexer's Unicode 6
  (listed below, up to Unicode 14): on a Python with newer tables a brand-new letter may differ.
  Lower-casing follows Python's tables too, while Java uses those of the JVM that runs it (Java 17:
  Unicode 13), so a capital added to Unicode since (U+2C2F, U+A7C0, U+A7D0) stays a capital in
  Java's output; it can only occur inside a URL or e-mail address token.

>>> for line in ptb_tokenize(["A man's T-shirt (red), on the U.S. flag!", "Don't stop... it's 10:30."]):
...     print(line)
a man 's t-shirt -lrb- red -rrb- on the u.s. flag
do n't stop it 's 10:30
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence

# pycocoevalcap deletes these tokens from the lower-cased output (its PUNCTUATIONS list).
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


# -----------------------------------------------------------------------------
# character classes
#
# The Java lexer is case-insensitive ("%caseless") for literal text but NOT inside character
# classes: [A]rk matches "Ark" and "ARK" but not "ark". We compile every rule with IGNORECASE and
# wrap each character class in (?-i:...) to get the same behaviour.


def _bmp_class(predicate: Callable[[str], bool]) -> str:
    """A regex character class (without brackets) of the BMP characters that satisfy predicate.

    Only the Basic Multilingual Plane: Java sees a character beyond it as two surrogate halves
    that no rule matches, so those are dropped (see the untokenizable rule)."""
    ranges, start, prev = [], None, None
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF or not predicate(chr(code)):
            continue
        if start is not None and code == prev + 1:
            prev = code
            continue
        if start is not None:
            ranges.append((start, prev))
        start = prev = code
    ranges.append((start, prev))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


def _cls(body: str) -> str:
    """A case-sensitive character class."""
    return f"(?-i:[{body}])"


# Java's lexer was generated from Unicode 6's tables. Letters and digits Unicode added later
# (up to 14, Python 3.11's) are not letters to it: these ranges, found by running the jar on every
# BMP character, are taken out again; U+1885-U+1886 were letters then and are marks now.
_NEWER_THAN_JAVA = frozenset(
    code
    for a, b in [
        (0x037F, 0x037F), (0x0528, 0x052F), (0x0560, 0x0560), (0x0588, 0x0588), (0x05EF, 0x05EF),
        (0x0860, 0x086A), (0x0870, 0x0887), (0x0889, 0x088E), (0x08A1, 0x08A1), (0x08AD, 0x08C9),
        (0x0978, 0x0978), (0x0980, 0x0980), (0x09FC, 0x09FC), (0x0AF9, 0x0AF9), (0x0C34, 0x0C34),
        (0x0C5A, 0x0C5A), (0x0C5D, 0x0C5D), (0x0C80, 0x0C80), (0x0CDD, 0x0CDD), (0x0D04, 0x0D04),
        (0x0D54, 0x0D56), (0x0D5F, 0x0D5F), (0x0DE6, 0x0DEF), (0x0E86, 0x0E86), (0x0E89, 0x0E89),
        (0x0E8C, 0x0E8C), (0x0E8E, 0x0E93), (0x0E98, 0x0E98), (0x0EA0, 0x0EA0), (0x0EA8, 0x0EA9),
        (0x0EAC, 0x0EAC), (0x13F5, 0x13F5), (0x13F8, 0x13FD), (0x16F1, 0x16F8), (0x170D, 0x170D),
        (0x171F, 0x171F), (0x1878, 0x1878), (0x191D, 0x191E), (0x19B0, 0x19C0), (0x19C8, 0x19C9),
        (0x1B4C, 0x1B4C), (0x1C80, 0x1C88), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1CF2, 0x1CF3),
        (0x1CFA, 0x1CFA), (0x2C2F, 0x2C2F), (0x2C5F, 0x2C5F), (0x312E, 0x312F), (0x31BB, 0x31BF),
        (0x4DB6, 0x4DBF), (0x9FCD, 0x9FFF), (0xA698, 0xA69D), (0xA78F, 0xA78F), (0xA794, 0xA79F),
        (0xA7AB, 0xA7CA), (0xA7D0, 0xA7D1), (0xA7D3, 0xA7D3), (0xA7D5, 0xA7D9), (0xA7F2, 0xA7F7),
        (0xA8FD, 0xA8FE), (0xA9E0, 0xA9E4), (0xA9E6, 0xA9FE), (0xAA7E, 0xAA7F), (0xAB30, 0xAB5A),
        (0xAB5C, 0xAB69), (0xAB70, 0xABBF),
    ]
    for code in range(a, b + 1)
)


def _java_category(char: str) -> str:
    if ord(char) in _NEWER_THAN_JAVA:
        return "Cn"  # unassigned, as far as the lexer knows
    return "Lo" if char in "\u1885\u1886" else unicodedata.category(char)


_LETTER_CHARS = _bmp_class(lambda c: _java_category(c).startswith("L"))  # Java isLetter
_DIGIT_CHARS = _bmp_class(lambda c: _java_category(c) == "Nd")  # Java isDigit
_UPPER_CHARS = _bmp_class(lambda c: _java_category(c) == "Lu")  # Java isUpperCase (nearly)

LETTER_ = _cls(_LETTER_CHARS)
DIGIT = _cls(_DIGIT_CHARS)
UPPER = _cls(_UPPER_CHARS)
# Marks and a few letters the lexer adds to [:letter:] inside words (combining accents, the soft
# hyphen U+00AD, dotless j, ...); "&eacute;"-style entities count as one letter too.
_EXTRA_WORD_CHARS = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385"
    "\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd"
    "\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef"
    "\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903"
    "\u093c\u093e-\u094e\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd"
    "\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2"
    "\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a"
    "\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
SPLET = r"&(?-i:[aeiouAEIOU])(?:acute|grave|uml);"
LETTER = f"(?:{_cls(_LETTER_CHARS + _EXTRA_WORD_CHARS)}|{SPLET})"

SPACE = _cls(" \t\u00a0\u2000-\u200a\u3000")
SPACES = f"{SPACE}+"
NEWLINE = r"(?:\r\n|(?-i:[\r\n\u2028\u2029\u000b\u000c\u0085]))"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
# An SGML/HTML tag: <b>, </b>, <br/>, <a href="x">, <!-- ... -->; attribute values are quoted.
_SGML_NAME = r"(?-i:[A-Za-z])(?-i:[A-Za-z0-9_:.\-])*"
_SGML_ATTR = f"{_SGML_NAME} *= *(?:'(?-i:[^'\\r\\n])*'|\"(?-i:[^\"\\r\\n])*\")|{_SGML_NAME}"
SGML = (
    r"<(?:(?-i:[!?])(?-i:[A-Za-z\-])(?-i:[^>\r\n])*"
    f"|{_SGML_NAME}(?: +(?:{_SGML_ATTR}))* */?|/{_SGML_NAME}) *>"
)
SENTEND = f"{SPACENL}(?:{SPACENL}|{UPPER}|{SGML})"

# -----------------------------------------------------------------------------
# token shapes (the lexer's macros)

APOS = r"(?:(?-i:['\u0092\u2019])|&apos;)"
APOSETC = f"(?:{APOS}|(?-i:[`\u0091\u2018\u201b]))"  # also seen inside words
HYPHEN = _cls("\\-_\u058a\u2010\u2011")
LETTER_OR_DIGIT = f"(?:{LETTER_}|{DIGIT})"

# A word: letters, then letters or digits; "cat.dog", "a!b" and "a1.b" are single words in 3.4.1.
WORD = f"{LETTER}(?:{LETTER}|{DIGIT})*(?:(?-i:[.!?]){LETTER}(?:{LETTER}|{DIGIT})*)*"
SWORD = r"(?-i:[A-Za-z\u00ad])*(?-i:[A-MO-Za-mo-z])(?-i:\u00ad)*"  # words before n't (not ending in n)
REDAUX = f"{APOS}(?:(?-i:[msdMSD])|re|ve|ll)"  # 's 'm 'd 're 've 'll
SREDAUX = f"n{APOSETC}t"

DATE = f"{DIGIT}{{1,2}}(?-i:[\\-/]){DIGIT}{{1,2}}(?-i:[\\-/]){DIGIT}{{2,4}}"
# Numbers keep their inner separators: 3.5 1,000 10:30; they may start with . , or : (".5", ":30").
NUM = f"{DIGIT}*(?:(?-i:[.:,\u00ad\u066b\u066c]){DIGIT}+)+|{DIGIT}+"
NUMBER = f"(?-i:[\\-+])?(?:{NUM})"
SUBSUPNUM = r"(?-i:[\u207a\u207b\u208a\u208b])?(?:(?-i:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079])+|(?-i:[\u2080-\u2089])+)"
FRAC = f"(?:{DIGIT}{{1,4}}(?-i:[\\- \u00a0]))?{DIGIT}{{1,4}}(?:\\\\?/|\u2044){DIGIT}{{1,4}}"
FRAC2 = _cls("\u00bc\u00bd\u00be\u2153-\u215e")
DOLSIGN = r"(?:(?-i:[A-Z])*\$|#)"
DOLSIGN2 = _cls("\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6")

THING = (
    f"(?:(?-i:[dDoOlL]){APOSETC}{LETTER_OR_DIGIT})?{LETTER_OR_DIGIT}+"
    f"(?:{HYPHEN}(?:(?-i:[dDoOlL]){APOSETC}{LETTER_OR_DIGIT})?{LETTER_OR_DIGIT}+)*"
)
THINGA = r"(?-i:[A-Z])+(?:(?:(?-i:[+&])|&amp;)(?-i:[A-Z])+)+"  # AT&T, Q&A (capitals only)
THING3 = r"(?-i:[A-Za-z0-9])+(?:-(?-i:[A-Za-z])+){0,2}(?:\\?/(?-i:[A-Za-z0-9])+(?:-(?-i:[A-Za-z])+){0,2}){1,2}"
# Python's regex alternation takes the first alternative that fits, the Java lexer the longest:
# alternatives that can be prefixes of others come last.
ACRO = r"U\.S\.-(?:U\.K|U\.S\.S\.R)|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|(?-i:[A-Za-z])(?:\.(?-i:[A-Za-z]))+"
HTHING = f"(?-i:[A-Za-z0-9])(?-i:[A-Za-z0-9.,\u00ad])*(?:-(?:(?:{ACRO})\\.|(?-i:[A-Za-z0-9\u00ad])+))+"

# Words with an apostrophe inside that stay whole: 'n', o'clock-like names, 'em, '90s, ...
# (a list of alternatives: the lexer takes the longest of them)
APOWORDS = [
    f"{APOS}n{APOS}?", f"(?-i:[lLdDjJ]){APOS}", f"Dunkin{APOS}", f"somethin{APOS}", f"ol{APOS}",
    f"{APOS}em", f"(?-i:[A-HJ-XZn]){APOSETC}{LETTER_}{{2}}{LETTER_}*", f"{APOS}(?-i:[2-9])0s",
    f"{APOS}till?", f"{LETTER_}+(?-i:[aeiouyAEIOUY]){APOSETC}(?-i:[aeiouA-Z]){LETTER_}*",
    f"{APOS}cause", "cont'd\\.?", "nor'easter", "c'mon", "e'er", "s'mores", "ev'ry", "li'l", "nat'l",
    f"O{APOSETC}o",
]
APOWORD2 = f"y{APOS}"

_URL_STOP = " \\t\\n\\f\\r\"<>|()"
FULLURL = f"https?://(?-i:[^{_URL_STOP}{{}}])+(?-i:[^{_URL_STOP}.!?{{}},\\-])"
_URL_PATH = r"(?:/(?-i:[^ \t\n\f\r\"<>|()])+(?-i:[^ \t\n\f\r\"<>|.!?(){},\-]))?"
LIKELYURLS = [
    r"www\.(?:(?-i:[^ \t\n\f\r\"<>|.!?(){},])+\.)+(?-i:[a-zA-Z]){2,4}" + _URL_PATH,
    # ",-_" is a range in the Java class: no digits, capitals or : / in these domain names
    r"(?:(?-i:[^ \t\n\f\r\"`'<>|.!?(){}\u002c-\u005f$])+\.)+(?:com|net|org|edu)" + _URL_PATH,
]
EMAIL = (
    r"(?:&lt;|<)?(?-i:[a-zA-Z0-9])(?-i:[^ \t\n\f\r\"<>|(){}\u00a0])*@(?:(?-i:[^ \t\n\f\r\"<>|(){}.\u00a0])+\.)*"
    r"(?-i:[^ \t\n\f\r\"<>|(){}.\u00a0])+(?:&gt;|>)?"
)
# file names with a known extension: "photo.jpg", "5a.c", "v1.2.txt"
FILENAME = (
    f"(?:{LETTER}|{DIGIT})+(?:\\.(?:{LETTER}|{DIGIT})+)*\\.(?:bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java"
    "|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)"
)
TWITTERS = ["@(?-i:[a-zA-Z_])(?-i:[a-zA-Z_0-9])*", f"#{LETTER}+"]  # @name, #tag

# Abbreviations, as the lexer lists them. Classes in capitals ([A]rk) are case sensitive.
ABMONTH = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
ABDAYS = "Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
ABSTATE = (
    "Ala|Ariz|(?-i:[A])z|(?-i:[A])rk|Calif|Colo|Conn|Ct|Dak|(?-i:[D])el|Fla|Ga|(?-i:[I])ll|Ind|Kans?|Ky"
    "|(?-i:[L])a|(?-i:[M])ass|Md|Mich|Minn|(?-i:[M])iss|Mo|Mont|Neb|Nev|Okla|(?-i:[O])re|(?-i:[P])a|Penn"
    "|Tenn|(?-i:[T])ex|Va|Vt|(?-i:[W])ash|Wisc?|Wyo"
)
ABCOMP = "Inc|Cos?|Corp|Pp?t(?-i:[ye])s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
ABNUM = "tel|est|ext|sq"
ABPTIT = "Jr|Sr|Bros|(?:Ed|Ph)\\.D|Blvd|Rd|Esq"
ABBREV1 = f"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|etc|al|seq|Bldg)\\."
ABTITLE = (
    "Mr|Mrs|Ms|(?-i:[M])iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl"
    "|Pvt|Capt|Ste?|Ave|Pres|Lieut|Rt|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens"
    "|Insp|Mlle|Mme|Msgr|Sfc|Sr"
)
ABCOMP2 = "Invt|Elec|Natl|M(?-i:[ft])g|Dept|Blvd|Rd|Ave"
# A single letter counts as an abbreviation ("J. Smith"), and so does an acronym without its
# final period ("U.S" in "U.S.").
ABBREV4 = f"(?:{ACRO}|a\\.k\\.a|{ABTITLE}|vs|Alex|Wm|Jos|Cie|cf|TREAS|Ph|{ABCOMP2}|(?-i:[A-Za-z]))"
ABBREV2 = f"{ABBREV4}\\."
ACRONYM = f"(?:{ACRO}|(?-i:[A-Za-z]))\\."
ABBREV3 = "(?:ca|figs?|prop|nos?|art|bldg|pp|op)\\."  # only before a number: "No. 5", "Fig. 3"
# After an acronym these words start a new sentence ("... in the U.S. The ..."); case sensitive.
SENTENCE_STARTS = "|".join(
    f"(?-i:{w[0]}){w[1:]}"  # the capital is case sensitive, the rest is not: "The", "THE", not "the"
    for w in (
        "About According Additionally After An A As At But Did During Earlier He Her Here How However If In"
        " It Last Many More Mr\\. Ms\\. Now Once One Other Our She Since So Some Such That The Their Then"
        " There These They This We When While What Who Why Yet You"
    ).split()
)

_PHONE_END = r"(?-i:[0-9]){3,4}(?-i:[\- \u00a0])?(?-i:[0-9]){3,5}"
PHONES = [
    r"\((?-i:[0-9]){2,3}\)(?-i:[ \u00a0])?" + _PHONE_END,
    r"(?:\+\+?)?(?:(?-i:[0-9]){2,4}(?-i:[\- \u00a0]))?(?-i:[0-9]){2,4}(?-i:[\- \u00a0])" + _PHONE_END,
    r"(?:(?:\+\+?)?(?-i:[0-9]){2,4}\.)?(?-i:[0-9]){2,4}\.(?-i:[0-9]){3,4}\.(?-i:[0-9]){3,5}",
]
LDOTS = r"\.{3,5}|\.(?-i:[ \u00a0])(?:\.(?-i:[ \u00a0])){1,3}\.|(?-i:[\u0085\u2026])"
QUOTES = (
    f"''|(?-i:[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f"
    f"\u2039\u203a\u00ab\u00bb]){{1,2}}|{APOS}"
)
DBLQUOT = r'"|&quot;'
TBSPEC = r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls" + f"|Cap{APOS}n|c{APOS}est"
TBSPEC2 = f"{APOS}(?-i:[0-9])(?-i:[0-9])"
SMILEY = r"(?-i:[<>])?(?-i:[:;=])(?-i:[\-o*'])?(?-i:[()DPdpO\\{@|\[\]])"
ASIANSMILEY = (
    r"(?-i:[\-^x=~<>'])_(?-i:[\-^x=~<>'])|\((?-i:[\-^x=~<>'])(?-i:[_.])?(?-i:[\-^x=~<>'])\)"
    r"|\((?-i:[\^x=~<>'])-(?-i:[\^x=~<>'`])\)"
)
MISCSYMBOL = _cls(
    "+%&~\\^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7\u0387"
    "\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d"
    "\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023\u2030-\u2038"
    "\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012"
    "\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)


# -----------------------------------------------------------------------------
# token text: what a rule makes of the text it matched


def _remove_soft_hyphens(text: str) -> str:
    return text.replace("\u00ad", "") or "-"


def _latex_quotes(text: str, probably_left: bool) -> str:
    """Straight quotes become ` `` (opening) or ' '' (closing); curly ones by their shape."""
    if probably_left:
        text = re.sub("&apos;|'", "`", text)
        text = re.sub('"|&quot;', "``", text)
    else:
        text = re.sub("&apos;|'", "'", text)
        text = re.sub('"|&quot;', "''", text)
    text = re.sub("[\u0091\u2018\u201b\u2039]", "`", text)
    text = re.sub("[\u0092\u2019\u203a]", "'", text)
    text = re.sub("[\u0093\u201c\u00ab]", "``", text)
    return re.sub("[\u0094\u201d\u00bb]", "''", text)


def _parens(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_AMP = re.compile("&amp;", re.IGNORECASE)

# An action maps the matched text (the part before any trailing context) to
# (token or None for no token, number of characters consumed). Consuming fewer characters than
# matched is Java's yypushback: the rest is lexed again ("cannot" -> "can", then "not").
Action = Callable[[str], tuple]


def _keep(text: str) -> tuple:
    return text, len(text)


def _drop(text: str) -> tuple:
    return None, len(text)


def _const(token: str) -> Action:
    return lambda text: (token, len(text))


def _pushback(n: int) -> Action:
    return lambda text: (text[:-n], len(text) - n)


def _acronym_sentence_end(text: str) -> tuple:
    # "U.S." before a sentence start: the token keeps its period and a period token follows;
    # a single letter ("I.") gives the letter, then the period.
    if len(text) == 2:
        return text[0], 1
    return text, len(text) - 1


def _abbrev_sentence_end(text: str) -> tuple:
    return text, len(text) - 1  # "etc." then "." again, as the sentence's end


def _hyphens(text: str) -> tuple:
    return ("--" if 3 <= len(text) <= 4 else text), len(text)


# -----------------------------------------------------------------------------
# the rules, in the lexer's order: (main pattern, trailing context or None, action)
#
# A rule with a trailing context matches only if the context follows, and the context counts
# toward the match's length when the longest match is chosen, but is not consumed. The order
# decides ties only. Top-level alternatives of one Java rule appear as rules of their own (the
# lists APOWORDS, LIKELYURLS, ...), because a Python alternation stops at the first alternative
# that fits, where the Java lexer takes the longest.

_RULES: list[tuple[str, str | None, Action]] = [
    ("c\\+\\+|[cf]#", None, _keep),  # programming languages
    ("cannot|'twas", None, _pushback(3)),  # can not, 't was
    ("'tis|gonna|gotta|lemme|gimme|wanna", None, _pushback(2)),  # 't is, gon na, ...
    (SGML, None, lambda t: (t.replace(" ", "\u00a0"), len(t))),
    ("&(?:MD|mdash|ndash);|(?-i:[\u0096\u0097\u2013\u2014\u2015])", None, _const("--")),
    ("&amp;", None, _const("&")),
    ("&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#(?-i:[0-9])+);", None, _keep),
    (WORD, REDAUX, lambda t: (_remove_soft_hyphens(t), len(t))),  # "it" before 's
    (SWORD, SREDAUX, lambda t: (_remove_soft_hyphens(t), len(t))),  # "do" before n't
    (WORD, None, lambda t: (_remove_soft_hyphens(t), len(t))),
    *[(w, None, _keep) for w in APOWORDS],
    (APOWORD2, LETTER_, _keep),
    (FULLURL, None, _keep),
    *[(u, None, _keep) for u in LIKELYURLS],
    (EMAIL, None, _keep),
    *[(t, None, _keep) for t in TWITTERS],
    (REDAUX, r"(?-i:[^A-Za-z])", lambda t: (_latex_quotes(t, False), len(t))),
    (SREDAUX, None, lambda t: (_latex_quotes(t, False), len(t))),
    (DATE, None, _keep),
    (NUMBER, None, lambda t: (_remove_soft_hyphens(t), len(t))),
    (SUBSUPNUM, None, _keep),
    (FRAC, None, lambda t: (t.replace(" ", "\u00a0"), len(t))),
    (FRAC2, None, lambda t: (_FRACTIONS.get(t, t), len(t))),
    (TBSPEC, None, lambda t: (_AMP.sub("&", t), len(t))),
    (THING3, None, _keep),
    (DOLSIGN, None, _keep),
    (DOLSIGN2, None, lambda t: (_CURRENCY.get(t, t), len(t))),
    (ACRONYM, f"{SPACENL}+(?:{SENTENCE_STARTS}|{SGML}){SPACENL}", _acronym_sentence_end),
    (ABBREV3, f"{SPACENL}?{DIGIT}", _keep),  # "No. 5", "Fig. 3"
    ("(?:pt(?-i:[eyEY])|co)\\.", f"{SPACE}(?:ltd|lim)", _keep),  # "Co. Ltd."
    (ABBREV1, SENTEND, _abbrev_sentence_end),
    (ABBREV1, "[\\s\\S][\\s\\S]", _keep),  # any two characters: "Co.a" is "Co." and "a"
    (ABBREV1, None, _abbrev_sentence_end),  # at the very end of the text
    (ABBREV2, None, _keep),
    (ABBREV4, SPACE, _keep),
    (ACRO, SPACENL, _keep),
    (TBSPEC2, SPACENL, _keep),
    (FILENAME, f"(?:{SPACENL}|(?-i:[.?!,]))", _keep),
    (f"(?:{WORD})\\.", "(?-i:[,;:\u3001])", lambda t: (_remove_soft_hyphens(t), len(t))),
    *[(p, None, lambda t: (_parens(t.replace(" ", "\u00a0")), len(t))) for p in PHONES],
    (DBLQUOT, r"(?-i:[A-Za-z0-9$])", lambda t: (_latex_quotes(t, True), len(t))),
    (DBLQUOT, None, lambda t: (_latex_quotes(t, False), len(t))),
    ("\x7f", None, _drop),
    ("&lt;|<", None, _const("<")),
    ("&gt;|>", None, _const(">")),
    (SMILEY, r"(?-i:[^A-Za-z0-9])", lambda t: (_parens(t), len(t))),
    (ASIANSMILEY, None, lambda t: (_parens(t), len(t))),
    ("\\{", None, _const("-LCB-")),
    ("\\}", None, _const("-RCB-")),
    ("\\[", None, _const("-LSB-")),
    ("\\]", None, _const("-RSB-")),
    ("\\(", None, _const("-LRB-")),
    ("\\)", None, _const("-RRB-")),
    ("-+", None, _hyphens),
    (LDOTS, None, _const("...")),
    ("@+|#+|_+", None, _keep),
    ("\\*+|(?:\\\\\\*){1,3}", None, _keep),
    ("(?-i:[,;:\u3001])", None, _keep),
    ("(?-i:[?!])+", None, _keep),
    ("(?-i:[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002])", None, _keep),
    ("=", None, _keep),
    ("/", None, _keep),
    (f"(?:{HTHING})\\.", "(?-i:[,;:\u3001])", lambda t: (_remove_soft_hyphens(t), len(t))),
    (HTHING, None, lambda t: (_remove_soft_hyphens(t), len(t))),
    (f"(?:{THING})\\.", "(?-i:[,;:\u3001])", _keep),
    (THING, None, _keep),
    (f"(?:{THINGA})\\.", "(?-i:[,;:\u3001])", lambda t: (_AMP.sub("&", t), len(t))),
    (THINGA, None, lambda t: (_AMP.sub("&", t), len(t))),
    ("'", "(?-i:[A-Za-z])(?-i:[^ \\t\\n\\r\\u00a0])", lambda t: (_latex_quotes(t, True), len(t))),
    (REDAUX, None, lambda t: (_latex_quotes(t, False), len(t))),
    (QUOTES, None, lambda t: (_latex_quotes(t, False), len(t))),
    ("<<|>>", None, _keep),
    (MISCSYMBOL, None, _keep),
    ("(?-i:[\x00\u200b\u200e\u200f\ufeff])|" + SPACES, None, _drop),
    (NEWLINE, None, _drop),  # (never inside a caption here: line breaks are spaces by then)
    ("&nbsp;", None, _drop),
    ("(?-i:[^\n])", None, _drop),  # untokenizable: Java logs it once and drops it
]


@functools.cache
def _lexer() -> tuple[re.Pattern, list[tuple[int, int | None, Action]]]:
    """One pattern that tries every rule at a position: each rule sits in a lookahead, so a
    single match call reports how far each rule would get. Compiled on first use (~0.2 s)."""
    parts = []
    for i, (main, context, _) in enumerate(_RULES):
        ctx = f"(?P<c{i}>{context})" if context else ""
        parts.append(f"(?:(?=(?P<m{i}>{main}){ctx})|)")
    pattern = re.compile("".join(parts), re.IGNORECASE)
    index = pattern.groupindex
    rules = [  # (group of the main part, group of the context or None, action), 0-based
        (index[f"m{i}"] - 1, index[f"c{i}"] - 1 if context else None, action)
        for i, (_, context, action) in enumerate(_RULES)
    ]
    return pattern, rules


# Shortcuts: the most common tokens of captions, recognised by one small pattern instead of all
# the rules. Each gives exactly what the rules give, for the reason in its comment; anything
# else, and any shortcut whose condition fails, takes the long way. (The generated corpus in
# tests/test_ptb_tokenizer.py is the check, with the long way alone as well.)
_SPLIT_WORDS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_SPACE_OR_END = r"[ \n]|\Z"  # a space, the line break, or the end of the text
_END = f"(?={_SPACE_OR_END})"
_SHORTCUTS = re.compile(
    # a run of spaces starting with " " or a tab is skipped whole (no-break and other wide
    # spaces too), as the rule for spaces does: no other rule starts with " " or a tab (but URLs
    # and e-mail addresses may start with a no-break space)
    "(?P<blank>[ \t][ \t\u00a0\u2000-\u200a\u3000]*)"
    # a hyphenated word of ASCII letters: no rule matches more of it than the whole (a URL or
    # e-mail would need a dot or @ before the next space)
    rf"|(?P<hyphenated>[A-Za-z]+(?:-[A-Za-z]+)+)(?={_SPACE_OR_END}|\)|[,.!?]{_END})"
    # a word of ASCII letters before a period that ends the text or is followed by a space: a
    # word, unless word + "." is an abbreviation (checked below)
    rf"|(?P<word_dot>[A-Za-z]+)(?=\.{_END})"
    # a word before a space, a line end, ", ", a lone ! or ?, ")", or "'s" followed by one of
    # these: no rule continues a letter run with any of them (a word joins "!x" only with a
    # letter after the "!"; an e-mail address would need an @ before the next space)
    rf"|(?P<word>[A-Za-z]+)(?=(?:'s)?(?:{_SPACE_OR_END}|[,!?.]{_END}|\)))"
    # 's before a non-letter: the clitic rule (ties go to it, it comes first)
    r"|(?P<clitic>'[sS](?![A-Za-z]))"
    # single punctuation that starts no longer token: ", " (",5" would be a number), a lone
    # ! or ? ("!!" is one token), a period not followed by " ." (". . ." is an ellipsis) or a
    # digit, and brackets (but "(x" may start the smiley "(x_x)")
    rf"|(?P<punct>,{_END}|[!?]{_END}|\.(?=\n|\Z| (?!\.))|\)|\((?=[A-Za-wyz]))"
    # digits before a space and a letter: a number (a fraction or phone number would need
    # digits after the space)
    r"|(?P<number>[0-9]+)(?= [A-Za-z])"
)
_PUNCT_TOKENS = {"(": "-LRB-", ")": "-RRB-"}


def _lex_line(text: str, end: int, shortcuts: bool = True) -> list[str]:
    """Tokens (before lower-casing) of text[:end]; text[end:] is only context for lookaheads.

    At each position every rule is tried; the longest match wins, the rule listed first on a
    tie; a rule's trailing context counts toward its length, as in the Java lexer (JFlex).
    ``shortcuts=False`` always takes the long way (for testing the shortcuts)."""
    pattern, rules = _lexer()
    tokens: list[str] = []
    pos = 0
    while pos < end:
        short = _SHORTCUTS.match(text, pos) if shortcuts else None
        if short is not None:
            kind, token = short.lastgroup, short.group()
            if kind == "blank":
                pos = short.end()
                continue
            if (kind != "word_dot" or not _ABBREVIATION.fullmatch(token + ".")) and (
                kind not in ("word", "word_dot") or token.lower() not in _SPLIT_WORDS
            ):
                tokens.append(_PUNCT_TOKENS.get(token, token))
                pos = short.end()
                continue
        groups = pattern.match(text, pos).groups()
        best, best_len = None, 0
        for main_group, context_group, action in rules:
            main = groups[main_group]
            if main is None:
                continue
            length = len(main) + (len(groups[context_group]) if context_group is not None else 0)
            if length > best_len:
                best, best_len = (main, action), length
        token, consumed = best[1](best[0])
        if token is not None:
            tokens.append(token)
        pos += consumed
    return tokens


# The commonest captions take one more shortcut, whole: ASCII words (hyphenated ones too, and
# with a possessive 's) separated by spaces and single commas, with an optional ".", "!" or "?"
# at the end. Their tokens are the words and the 's, for the reasons given at _SHORTCUTS, except
# when a word is split ("cannot") or the last word and its period may be an abbreviation
# ("etc.", "Mr.", "A."): those take the long way.
_CHUNK = r"[A-Za-z]+(?:-[A-Za-z]+)*(?:'s)?"
_PLAIN_CAPTION = re.compile(rf" *{_CHUNK}(?:,? +{_CHUNK})*(?P<end>,|(?P<dot>\.)|[!?]| [.!?])? *")
_PLAIN_TOKENS = re.compile(r"[a-z]+(?:-[a-z]+)*|'s")
_ABBREVIATION = re.compile(f"{ABBREV1}|{ABBREV2}|{ABBREV3}|(?:pt(?-i:[eyEY])|co)\\.", re.IGNORECASE)


def _plain_caption(line: str) -> str | None:
    """The tokenized caption if the whole-caption shortcut applies, else None."""
    match = _PLAIN_CAPTION.fullmatch(line)
    if match is None:
        return None
    tokens = _PLAIN_TOKENS.findall(line.lower())
    if not _SPLIT_WORDS.isdisjoint(tokens):
        return None
    if match.group("dot") and _ABBREVIATION.fullmatch(line.rstrip(" ").rsplit(" ", 1)[-1]):
        return None  # the last chunk, period included, may be an abbreviation
    return " ".join(tokens)


# -----------------------------------------------------------------------------
# the public functions

# Line breaks other than "\n" would start a new line for Java (see the module docstring).
_OTHER_NEWLINES = re.compile("[\r\u000b\u000c\u0085\u2028\u2029]")


_SPACE_CHARS = " \t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u3000"


def _follow(lines: list[str], i: int) -> str:
    """What Java sees after line i, as far as any rule can look: the line breaks and lines up to
    the first line with a non-space character, and the line break after it ("" at the end)."""
    for j in range(i + 1, len(lines)):
        if lines[j].strip(_SPACE_CHARS):
            return "\n" + "\n".join(lines[i + 1 : j + 1]) + ("\n" if j + 1 < len(lines) else "")
    return "".join("\n" + line for line in lines[i + 1 :])  # only blank lines (or none) follow


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """Tokenize a batch of captions exactly as pycocoevalcap's ``PTBTokenizer`` does.

    The batch matters in rare cases: Java reads the captions as lines of one file, and a few
    rules look past the end of a line ("I saw a." is followed by "The dog ..." on the next line:
    "a" and "." instead of "a."). Pass the captions in pycocoevalcap's order (image by image,
    references in their order) for identical output.

    >>> ptb_tokenize(["A dog, sitting.", "Colour [grey] is not americanised!"])
    ['a dog sitting', 'colour -lsb- grey -rsb- is not americanised']
    """
    return _tokenize(captions)


# Java strings are UTF-16: a character beyond U+FFFF (an emoji) is two "characters", surrogate
# halves, which no rule matches as a letter but the "anything but a space" classes of URL rules
# do, and which count twice toward lengths. We lex such a caption in UTF-16 halves too.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _utf16_halves(char: re.Match) -> str:
    code = ord(char.group()) - 0x10000
    return chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF))


def _tokenize(captions: Sequence[str], shortcuts: bool = True) -> list[str]:
    lines = [_OTHER_NEWLINES.sub(" ", c.replace("\n", " ")) for c in captions]
    lines = [_ASTRAL.sub(_utf16_halves, line) if _ASTRAL.search(line) else line for line in lines]
    out = []
    for i, line in enumerate(lines):
        plain = _plain_caption(line) if shortcuts else None
        if plain is not None:
            out.append(plain)
            continue
        text = line + _follow(lines, i)
        # pycocoevalcap strips the line's trailing whitespace (a URL may end in a no-break
        # space), splits it on spaces and drops the punctuation tokens
        tokens = " ".join(_lex_line(text, len(line), shortcuts)).lower().rstrip().split(" ")
        out.append(" ".join(t for t in tokens if t not in PTB_PUNCTUATION))
        if "\ud800" <= max(out[-1], default=" "):  # surrogate halves back into characters
            out[-1] = out[-1].encode("utf-16", "surrogatepass").decode("utf-16")
    return out


def tokenize_caption(caption: str) -> str:
    """One caption, tokenized as pycocoevalcap's ``PTBTokenizer`` does with it alone.

    >>> tokenize_caption("A man's T-shirt (red), on the U.S. flag!")
    "a man 's t-shirt -lrb- red -rrb- on the u.s. flag"
    """
    return ptb_tokenize([caption])[0]
