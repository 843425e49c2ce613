"""Request JSON read and printed the way TF Serving's rapidjson 1.1.0 does it.

TF Serving (``tensorflow_serving/util/json_tensor.cc`` ``ParseJson``) parses a
request body with ``kParseIterativeFlag | kParseNanAndInfFlag |
kParseStopWhenDoneFlag`` (rapidjson v1.1.0, pinned in
``tensorflow_serving/workspace.bzl``). That fixes what a client sees:

- parsing stops at the end of the first JSON value; whatever follows is ignored;
- ``NaN``, ``Inf``, ``Infinity``, ``-Inf``, ``-Infinity`` are numbers;
- a duplicated object key is kept twice; lookups (``FindMember``) find the first;
- strings are not checked for valid UTF-8 (bytes are passed on as they are);
- ``1e309`` is "Number too big to be stored in double." but ``2e308`` is infinity;
- errors read ``JSON Parse error: <rapidjson's English message> at offset: <byte>``.

``parse`` reads every well-formed body with the standard library's C scanner
and falls back to a byte-for-byte port of rapidjson's iterative parser only
where the answers could differ (:func:`needs_rapidjson`) or the scanner refuses
the body (the port words the error, with rapidjson's offset).

``debug_string`` prints a value like ``JsonValueToDebugString`` in
json_tensor.cc: rapidjson's PrettyWriter with ``kFormatSingleLineArray``,
cut at the first token written after 256 bytes. Error messages embed it.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

ENCODING_ERRORS = "surrogateescape"  # str <-> the request's raw bytes, invalid UTF-8 kept


class JsonParseError(ValueError):
    """The body is not JSON as rapidjson reads it; ``str(e)`` is TF Serving's message."""


class DupDict(dict):
    """A JSON object with a repeated key: the dict holds the first value, ``pairs`` all members."""

    __slots__ = ("pairs",)


def members(obj: dict) -> list:
    """Every (key, value) of a JSON object in document order, repeated keys included."""
    return obj.pairs if isinstance(obj, DupDict) else list(obj.items())


def member_count(obj: dict) -> int:
    return len(obj.pairs) if isinstance(obj, DupDict) else len(obj)


def _object_hook(pairs):
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    first = DupDict()
    for k, v in pairs:
        if k not in first:
            first[k] = v
    first.pairs = pairs
    return first


_DECODER = json.JSONDecoder(object_pairs_hook=_object_hook)

# The stdlib scanner reads every well-formed body as rapidjson does, except:
# - integer tokens of 20 or more digits: rapidjson overflows uint64 into a double (or "Number too
#   big") where Python keeps an int; 20 digits is the first length that can exceed 2**64 - 1;
# - exponents of 3 or more digits: only these can overflow a double ("Number too big to be stored
#   in double." for 1e309, inf for 2e308) or reach the subnormals, where rapidjson's arithmetic
#   (StrtodNormalPrecision) and Python's correctly rounded strtod part ways;
# - surrogate escapes: rapidjson refuses a lone high surrogate and writes a lone low one as bytes.
# Long fractions stay on the fast path: rapidjson keeps 17 significant digits and scales by powers of
# ten, so its double can differ from Python's by an ulp, which no float32 (DT_FLOAT) input can see,
# and doubles of up to 17 digits (what json.dumps writes) have always differed that way.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_DIGITS_AS_9 = bytes.maketrans(b"0123456789E", b"9999999999e")  # one C pass instead of a slow regex
_LONG_RUN = b"9" * 20
_RUN_REST = re.compile(rb"9*")
_BIG_EXPONENT = b"e999"  # after dropping signs: e999, e+999, e-999 (3+ exponent digits)


def needs_rapidjson(body: bytes) -> bool:
    """Whether the stdlib scanner could read ``body`` differently from rapidjson (see above)."""
    tr = body.translate(_DIGITS_AS_9, b"+-")
    if tr.find(_BIG_EXPONENT) >= 0 or (b"\\u" in body and _SURROGATE_ESCAPE.search(body) is not None):
        return True
    pos = tr.find(_LONG_RUN)
    while pos >= 0:  # pos is the start of a digit run (the leftmost match of a run is its start)
        if pos == 0 or tr[pos - 1] != 0x2E:  # not after "." : an integer part of 20+ digits
            return True
        pos = tr.find(_LONG_RUN, _RUN_REST.match(tr, pos).end())  # a fraction: skip the rest of its digits
    return False


_WS = b" \t\n\r"

# rapidjson/error/en.h GetParseError_En
_ERR = {
    "DocumentEmpty": "The document is empty.",
    "ValueInvalid": "Invalid value.",
    "ObjectMissName": "Missing a name for object member.",
    "ObjectMissColon": "Missing a colon after a name of object member.",
    "ObjectMissCommaOrCurlyBracket": "Missing a comma or '}' after an object member.",
    "ArrayMissCommaOrSquareBracket": "Missing a comma or ']' after an array element.",
    "StringUnicodeEscapeInvalidHex": "Incorrect hex digit after \\u escape in string.",
    "StringUnicodeSurrogateInvalid": "The surrogate pair in string is invalid.",
    "StringEscapeInvalid": "Invalid escape character in string.",
    "StringMissQuotationMark": "Missing a closing quotation mark in string.",
    "NumberTooBig": "Number too big to be stored in double.",
    "NumberMissFraction": "Miss fraction part in number.",
    "NumberMissExponent": "Miss exponent in number.",
}


class _Fail(Exception):
    def __init__(self, code: str, offset: int):
        super().__init__(code)
        self.code, self.offset = code, offset


def parse(body: bytes):
    """The first JSON value of ``body`` (json_tensor.cc ParseJson); raises JsonParseError."""
    if not body:
        raise JsonParseError("JSON Parse error: The document is empty")
    # EncodedInputStream<UTF8<>, MemoryStream> skips a UTF-8 BOM (each of its bytes, in order)
    bom = 0
    for b in (0xEF, 0xBB, 0xBF):
        if bom < len(body) and body[bom] == b:
            bom += 1
    if not needs_rapidjson(body):
        text = body[bom:].decode("utf-8", ENCODING_ERRORS)
        start = len(text) - len(text.lstrip(" \t\n\r"))
        try:
            return _DECODER.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            pass  # rapidjson decides: maybe an error (with its offset), maybe "Inf"/"-NaN"
    try:
        return _Parser(body, bom).parse()
    except _Fail as f:
        raise JsonParseError(f"JSON Parse error: {_ERR[f.code]} at offset: {f.offset}") from None


# --------------------------------------------------------------------------- rapidjson reader port

_POW10 = [float(f"1e{i}") for i in range(309)]
_ESCAPE = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b", ord("f"): b"\f",
           ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_DIGITS = frozenset(b"0123456789")


def _fast_path(significand: float, exp: int) -> float:
    # internal/strtod.h FastPath
    if exp < -308:
        return 0.0
    if exp >= 0:
        return significand * _POW10[exp] if exp <= 308 else significand * math.inf
    return significand / _POW10[-exp]


def _strtod_normal(d: float, p: int) -> float:
    # internal/strtod.h StrtodNormalPrecision
    if p < -308:
        return _fast_path(_fast_path(d, -308), p + 308)
    return _fast_path(d, p)


class _Parser:
    """rapidjson 1.1.0 GenericReader::IterativeParse with TF Serving's flags, building Python values."""

    def __init__(self, data: bytes, start: int = 0):
        self.s = data
        self.n = len(data)
        self.i = start  # offsets count from the start of the body, BOM included

    def peek(self) -> int:
        # MemoryStream: 0 at the end; a NUL byte reads the same
        return self.s[self.i] if self.i < self.n else 0

    def skip_ws(self):
        s, i, n = self.s, self.i, self.n
        while i < n and s[i] in _WS:
            i += 1
        self.i = i

    def consume(self, c: int) -> bool:
        if self.peek() == c:
            self.i += 1
            return True
        return False

    # states of IterativeParse that matter for HandleError
    def parse(self):
        self.skip_ws()
        c = self.peek()
        if c == 0:
            raise _Fail("DocumentEmpty", self.i)
        if c == ord("["):
            return self.container(list)
        if c == ord("{"):
            return self.container(dict)
        if c in (ord("]"), ord("}"), ord(","), ord(":")):
            raise _Fail("DocumentEmpty", self.i)  # HandleError(StartState)
        return self.value()

    def container(self, kind):
        """An array or object, iteratively (rapidjson's kParseIterativeFlag: no depth limit)."""
        # stack entries: [container, is_object, pairs_or_list, state, pending_key]
        stack = []

        def open_(k):
            self.i += 1
            stack.append([k is dict, [], "init", None])

        def close():
            is_obj, items, _, _ = stack.pop()
            self.i += 1
            return _object_hook(items) if is_obj else items

        open_(kind)
        while True:
            self.skip_ws()
            top = stack[-1]
            is_obj, items, state, key = top
            c = self.peek()
            if c == 0:
                raise _Fail(self._missing(is_obj, state), self.i)
            if is_obj:
                if state in ("init", "delim"):
                    if c == ord('"'):
                        top[3] = self.string()
                        top[2] = "key"
                        continue
                    if c == ord("}"):
                        if state == "delim":
                            raise _Fail("ObjectMissName", self.i)
                        val = close()
                    else:
                        raise _Fail("ObjectMissName", self.i)
                elif state == "key":
                    if c != ord(":"):
                        raise _Fail("ObjectMissColon", self.i)
                    self.i += 1
                    top[2] = "colon"
                    continue
                elif state == "colon":
                    if c in (ord("["), ord("{")):
                        top[2] = "value"
                        open_(list if c == ord("[") else dict)
                        continue
                    if c in (ord("]"), ord("}"), ord(","), ord(":")):
                        raise _Fail("ValueInvalid", self.i)
                    items.append((key, self.value()))
                    top[2] = "value"
                    continue
                else:  # value
                    if c == ord(","):
                        self.i += 1
                        top[2] = "delim"
                        continue
                    if c == ord("}"):
                        val = close()
                    else:
                        raise _Fail("ObjectMissCommaOrCurlyBracket", self.i)
            else:
                if state in ("init", "delim"):
                    if c in (ord("["), ord("{")):
                        top[2] = "elem"
                        open_(list if c == ord("[") else dict)
                        continue
                    if c == ord("]"):
                        if state == "delim":
                            raise _Fail("ValueInvalid", self.i)
                        val = close()
                    elif c in (ord("}"), ord(","), ord(":")):
                        raise _Fail("ValueInvalid", self.i)
                    else:
                        items.append(self.value())
                        top[2] = "elem"
                        continue
                else:  # elem
                    if c == ord(","):
                        self.i += 1
                        top[2] = "delim"
                        continue
                    if c == ord("]"):
                        val = close()
                    else:
                        raise _Fail("ArrayMissCommaOrSquareBracket", self.i)
            # a container closed: hand it to its parent (or finish)
            if not stack:
                return val
            parent = stack[-1]
            if parent[0]:
                parent[1].append((parent[3], val))
            else:
                parent[1].append(val)

    @staticmethod
    def _missing(is_obj: bool, state: str) -> str:
        # HandleError(state) when the input ends
        if is_obj:
            return {"init": "ObjectMissName", "delim": "ObjectMissName", "key": "ObjectMissColon",
                    "colon": "ValueInvalid", "value": "ObjectMissCommaOrCurlyBracket"}[state]
        return {"init": "ValueInvalid", "delim": "ValueInvalid", "elem": "ArrayMissCommaOrSquareBracket"}[state]

    def value(self):
        c = self.peek()
        if c == ord("n"):
            return self.literal(b"null", None)
        if c == ord("t"):
            return self.literal(b"true", True)
        if c == ord("f"):
            return self.literal(b"false", False)
        if c == ord('"'):
            return self.string()
        return self.number()

    def literal(self, word: bytes, val):
        self.i += 1
        for ch in word[1:]:
            if not self.consume(ch):
                raise _Fail("ValueInvalid", self.i)
        return val

    def string(self) -> str:
        s = self.s
        self.i += 1  # opening quote
        out = bytearray()
        while True:
            c = self.peek()
            if c == ord("\\"):
                esc_at = self.i
                self.i += 1
                e = self.peek()
                if e in _ESCAPE:
                    self.i += 1
                    out += _ESCAPE[e]
                elif e == ord("u"):
                    self.i += 1
                    cp = self.hex4(esc_at)
                    if 0xD800 <= cp <= 0xDBFF:
                        if not (self.consume(ord("\\")) and self.consume(ord("u"))):
                            raise _Fail("StringUnicodeSurrogateInvalid", esc_at)
                        cp2 = self.hex4(esc_at)
                        if not 0xDC00 <= cp2 <= 0xDFFF:
                            raise _Fail("StringUnicodeSurrogateInvalid", esc_at)
                        cp = (((cp - 0xD800) << 10) | (cp2 - 0xDC00)) + 0x10000
                    out += chr(cp).encode("utf-8", "surrogatepass")  # lone low surrogates pass, as in rapidjson
                else:
                    raise _Fail("StringEscapeInvalid", esc_at)
            elif c == ord('"'):
                self.i += 1
                return out.decode("utf-8", ENCODING_ERRORS)
            elif c < 0x20:
                raise _Fail("StringMissQuotationMark" if c == 0 else "StringEscapeInvalid", self.i)
            else:
                j = self.i
                n = self.n
                while j < n and s[j] >= 0x20 and s[j] != 0x22 and s[j] != 0x5C:
                    j += 1
                out += s[self.i:j]
                self.i = j

    def hex4(self, esc_at: int) -> int:
        cp = 0
        for _ in range(4):
            h = _HEX.get(self.peek())
            if h is None:
                raise _Fail("StringUnicodeEscapeInvalidHex", esc_at)
            cp = cp * 16 + h
            self.i += 1
        return cp

    def number(self):
        """reader.h ParseNumber (normal precision), returning int for integers, float otherwise."""
        start = self.i
        minus = self.consume(ord("-"))
        i64 = 0
        use64 = use_double = use_nan_inf = False
        d = 0.0
        significand_digit = 0
        c = self.peek()
        if c == ord("0"):
            self.i += 1
        elif ord("1") <= c <= ord("9"):
            i64 = c - 48
            self.i += 1
            lim32, lim64 = (2**31, 2**63) if minus else (2**32 - 1, 2**64 - 1)
            while self.peek() in _DIGITS:
                nxt = i64 * 10 + self.peek() - 48
                if nxt > lim64:
                    d = float(i64)
                    use_double = True
                    break
                if nxt > lim32:
                    use64 = True
                i64 = nxt
                self.i += 1
                significand_digit += 1
        elif c in (ord("I"), ord("N")):
            use_nan_inf = True
            if self.consume(ord("N")):
                if not (self.consume(ord("a")) and self.consume(ord("N"))):
                    raise _Fail("ValueInvalid", self.i)
                d = math.nan
            else:
                self.i += 1  # 'I'
                if not (self.consume(ord("n")) and self.consume(ord("f"))):
                    raise _Fail("ValueInvalid", self.i)
                d = -math.inf if minus else math.inf
                if self.peek() == ord("i"):
                    for ch in b"inity":
                        if not self.consume(ch):
                            raise _Fail("ValueInvalid", self.i)
        else:
            raise _Fail("ValueInvalid", self.i)

        if use_double:  # integer too big for uint64: accumulate as double
            while self.peek() in _DIGITS:
                if d >= 1.7976931348623157e307:
                    raise _Fail("NumberTooBig", start)
                d = d * 10 + (self.peek() - 48)
                self.i += 1

        exp_frac = 0
        if self.consume(ord(".")):
            if self.peek() not in _DIGITS:
                raise _Fail("NumberMissFraction", self.i)
            if not use_double:
                while self.peek() in _DIGITS:
                    if i64 > 2**53 - 1:
                        break
                    i64 = i64 * 10 + self.peek() - 48
                    self.i += 1
                    exp_frac -= 1
                    if i64 != 0:
                        significand_digit += 1
                d = float(i64)
                use_double = True
            while self.peek() in _DIGITS:
                if significand_digit < 17:
                    d = d * 10.0 + (self.peek() - 48)
                    exp_frac -= 1
                    if d > 0.0:
                        significand_digit += 1
                self.i += 1

        exp = 0
        if self.consume(ord("e")) or self.consume(ord("E")):
            if not use_double:
                d = float(i64)
                use_double = True
            exp_minus = False
            if self.consume(ord("+")):
                pass
            elif self.consume(ord("-")):
                exp_minus = True
            if self.peek() not in _DIGITS:
                raise _Fail("NumberMissExponent", self.i)
            exp = self.peek() - 48
            self.i += 1
            if exp_minus:
                while self.peek() in _DIGITS:
                    exp = exp * 10 + self.peek() - 48
                    self.i += 1
                    if exp >= 214748364:
                        while self.peek() in _DIGITS:
                            self.i += 1
                exp = -exp
            else:
                max_exp = 308 - exp_frac
                while self.peek() in _DIGITS:
                    exp = exp * 10 + self.peek() - 48
                    self.i += 1
                    if exp > max_exp:
                        raise _Fail("NumberTooBig", start)

        if use_double:
            d = _strtod_normal(d, exp + exp_frac)
            return -d if minus else d
        if use_nan_inf:
            return d
        return -i64 if minus else i64


# --------------------------------------------------------------------------- debug string

_MAX_DEBUG_BYTES = 256  # json_tensor.cc kMaxJsonDebugStringBytes
_WESC = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}


def string_token(s: str) -> bytes:
    raw = s.encode("utf-8", ENCODING_ERRORS) if isinstance(s, str) else bytes(s)
    out = bytearray(b'"')
    for b in raw:
        if b in _WESC:
            out += _WESC[b]
        elif b < 0x20:
            out += b"\\u00%02X" % b
        else:
            out.append(b)
    out += b'"'
    return bytes(out)


def double_token(v: float) -> bytes | None:
    """rapidjson Writer::WriteDouble (Grisu shortest digits + Prettify); None for NaN/Inf (refused)."""
    if math.isnan(v) or math.isinf(v):
        return None
    if v == 0:
        return b"-0.0" if math.copysign(1.0, v) < 0 else b"0.0"
    sign = b"-" if v < 0 else b""
    t = Decimal(repr(abs(v))).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    length, k = len(digits), t.exponent
    kk = length + k
    if 0 <= k and kk <= 21:
        s = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        s = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        s = "0." + "0" * (-kk) + digits
    elif kk < -324:
        s = "0.0"
    elif length == 1:
        s = digits + "e" + str(kk - 1)
    else:
        s = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + s.encode()


def _scalar_token(val) -> bytes | None:
    if val is None:
        return b"null"
    if val is True:
        return b"true"
    if val is False:
        return b"false"
    if isinstance(val, str):
        return string_token(val)
    if isinstance(val, int):
        return str(val).encode() if -(2**63) <= val < 2**64 else double_token(float(val))
    return double_token(float(val))


def debug_string(val) -> str:
    """JsonValueToDebugString: PrettyWriter(kFormatSingleLineArray) cut once 256 bytes are written."""
    buf = bytearray()
    levels: list[list] = []  # [in_array, value_count]

    def prefix():
        if levels:
            lv = levels[-1]
            if lv[0]:
                if lv[1] > 0:
                    buf.extend(b", ")
            else:
                if lv[1] > 0:
                    buf.extend(b",\n" if lv[1] % 2 == 0 else b": ")
                else:
                    buf.extend(b"\n")
                if lv[1] % 2 == 0:
                    buf.extend(b"    " * len(levels))
            lv[1] += 1

    # iterative walk: ("v", value) | ("end", is_array)
    work = [("v", val)]
    while work:
        if len(buf) >= _MAX_DEBUG_BYTES:
            break
        kind, x = work.pop()
        if kind == "key":
            prefix()
            buf.extend(string_token(x))
        elif kind == "end":
            lv = levels.pop()
            if x:
                buf.extend(b"]")
            else:
                if lv[1]:
                    buf.extend(b"\n" + b"    " * len(levels))
                buf.extend(b"}")
        elif isinstance(x, list):
            prefix()
            buf.extend(b"[")
            levels.append([True, 0])
            work.append(("end", True))
            work.extend(("v", v) for v in reversed(x))
        elif isinstance(x, dict):
            prefix()
            buf.extend(b"{")
            levels.append([False, 0])
            work.append(("end", False))
            for k, v in reversed(members(x)):
                work.append(("v", v))
                work.append(("key", k))
        else:
            prefix()
            tok = _scalar_token(x)
            if tok is None:  # Writer refuses NaN/Inf without kWriteNanAndInfFlag: output stops here
                break
            buf.extend(tok)
    return buf.decode("utf-8", ENCODING_ERRORS)


def type_name(val) -> str:
    """json_tensor.cc JsonTypeString."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"
