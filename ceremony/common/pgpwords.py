"""The PGP word list: a hash read aloud as words, one word per byte.

Two lists of 256 words each: two-syllable words for bytes at even positions (0, 2, 4, ...) and
three-syllable words for bytes at odd positions. Because the two lists differ in rhythm, a
swapped, repeated or dropped word is heard at once, which hex digits do not offer. The transcript
shows each act's chain head this way for the Internal Witness to copy onto the paper script.
"""

from __future__ import annotations


def _table(text: str) -> tuple[str, ...]:
    """256 words, 8 per line: line n holds the words of bytes 8n to 8n+7."""
    return tuple(text.split())


EVEN_WORDS = _table("""
aardvark absurd accrue acme adrift adult afflict ahead
aimless Algol allow alone ammo ancient apple artist
assume Athens atlas Aztec baboon backfield backward banjo
beaming bedlamp beehive beeswax befriend Belfast berserk billiard
bison blackjack blockade blowtorch bluebird bombast bookshelf brackish
breadline breakup brickyard briefcase Burbank button buzzard cement
chairlift chatter checkup chisel choking chopper Christmas clamshell
classic classroom cleanup clockwork cobra commence concert cowbell
crackdown cranky crowfoot crucial crumpled crusade cubic dashboard
deadbolt deckhand dogsled dragnet drainage dreadful drifter dropper
drumbeat drunken Dupont dwelling eating edict egghead eightball
endorse endow enlist erase escape exceed eyeglass eyetooth
facial fallout flagpole flatfoot flytrap fracture framework freedom
frighten gazelle Geiger glitter glucose goggles goldfish gremlin
guidance hamlet highchair hockey indoors indulge inverse involve
island jawbone keyboard kickoff kiwi klaxon locale lockup
merit minnow miser Mohawk mural music necklace Neptune
newborn nightbird Oakland obtuse offload optic orca payday
peachy pheasant physique playhouse Pluto preclude prefer preshrunk
printer prowler pupil puppy python quadrant quiver quota
ragtime ratchet rebirth reform regain reindeer rematch repay
retouch revenge reward rhythm ribcage ringbolt robust rocker
ruffled sailboat sawdust scallion scenic scorecard Scotland seabird
select sentence shadow shamrock showgirl skullcap skydive slingshot
slowdown snapline snapshot snowcap snowslide solo southward soybean
spaniel spearhead spellbind spheroid spigot spindle spyglass stagehand
stagnate stairway standard stapler steamship sterling stockman stopwatch
stormy sugar surmount suspense sweatband swelter tactics talon
tapeworm tempest tiger tissue tonic topmost tracker transit
trauma treadmill Trojan trouble tumor tunnel tycoon uncut
unearth unwind uproot upset upshot vapor village virus
Vulcan waffle wallet watchword wayside willow woodlark Zulu
""")


ODD_WORDS = _table("""
adroitness adviser aftermath aggregate alkali almighty amulet amusement
antenna applicant Apollo armistice article asteroid Atlantic atmosphere
autopsy Babylon backwater barbecue belowground bifocals bodyguard bookseller
borderline bottomless Bradbury bravado Brazilian breakaway Burlington businessman
butterfat Camelot candidate cannonball Capricorn caravan caretaker celebrate
cellulose certify chambermaid Cherokee Chicago clergyman coherence combustion
commando company component concurrent confidence conformist congregate consensus
consulting corporate corrosion councilman crossover crucifix cumbersome customer
Dakota decadence December decimal designing detector detergent determine
dictator dinosaur direction disable disbelief disruptive distortion document
embezzle enchanting enrollment enterprise equation equipment escapade Eskimo
everyday examine existence exodus fascinate filament finicky forever
fortitude frequency gadgetry Galveston getaway glossary gossamer graduate
gravity guitarist hamburger Hamilton handiwork hazardous headwaters hemisphere
hesitate hideaway holiness hurricane hydraulic impartial impetus inception
indigo inertia infancy inferno informant insincere insurgent integrate
intention inventive Istanbul Jamaica Jupiter leprosy letterhead liberty
maritime matchmaker maverick Medusa megaton microscope microwave midsummer
millionaire miracle misnomer molasses molecule Montana monument mosquito
narrative nebula newsletter Norwegian October Ohio onlooker opulent
Orlando outfielder Pacific pandemic Pandora paperweight paragon paragraph
paramount passenger pedigree Pegasus penetrate perceptive performance pharmacy
phonetic photograph pioneer pocketful politeness positive potato processor
provincial proximate puberty publisher pyramid quantity racketeer rebellion
recipe recover repellent replica reproduce resistor responsive retraction
retrieval retrospect revenue revival revolver sandalwood sardonic Saturday
savagery scavenger sensation sociable souvenir specialist speculate stethoscope
stupendous supportive surrender suspicious sympathy tambourine telephone therapist
tobacco tolerance tomorrow torpedo tradition travesty trombonist truncated
typewriter ultimate undaunted underfoot unicorn unify universe unravel
upcoming vacancy vagabond vertigo Virginia visitor vocalist voyager
warranty Waterloo whimsical Wichita Wilmington Wyoming yesteryear Yucatan
""")


assert len(EVEN_WORDS) == 256 and len(ODD_WORDS) == 256


def to_words(data: bytes) -> list[str]:
    """One word per byte: even positions from the two-syllable list, odd from the three-syllable one."""
    return [(EVEN_WORDS if i % 2 == 0 else ODD_WORDS)[b] for i, b in enumerate(data)]


def hex_to_words(hex_digest: str) -> list[str]:
    return to_words(bytes.fromhex(hex_digest))


def from_words(words: list[str]) -> bytes:
    """The bytes back from words (case-insensitive); a word from the wrong list is an error."""
    even = {w.casefold(): i for i, w in enumerate(EVEN_WORDS)}
    odd = {w.casefold(): i for i, w in enumerate(ODD_WORDS)}
    out = bytearray()
    for i, w in enumerate(words):
        table = even if i % 2 == 0 else odd
        key = w.casefold()
        if key not in table:
            other = "three" if i % 2 == 0 else "two"
            hint = f" (a {other}-syllable word: a word is missing or repeated before it)" \
                if key in (odd if i % 2 == 0 else even) else ""
            raise ValueError(f"word {i + 1} {w!r} is not in the PGP word list at this position{hint}")
        out.append(table[key])
    return bytes(out)


def lines(hex_digest: str, per_line: int = 8) -> list[str]:
    """Numbered lines of words, for reading aloud and copying onto paper."""
    words = hex_to_words(hex_digest)
    return [f"{n}: {' '.join(words[i:i + per_line])}" for n, i in enumerate(range(0, len(words), per_line), 1)]
