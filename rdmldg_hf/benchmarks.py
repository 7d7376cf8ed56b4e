"""DomainBed benchmarks: folder names, domains, classes and the names prompts use.

Each benchmark is a declaration (as in DomainBed's ``datasets.py``); no logic is written
per benchmark. ``get_benchmark("officehome")`` is the one way in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Benchmark",
    "BENCHMARKS",
    "EMBEDDED_BENCHMARK",
    "get_benchmark",
    "normalize_name",
    "display_name",
]


def normalize_name(name: str) -> str:
    """Lower-case, spaces/hyphens to underscores: the form split and config names use.

    ``"Real World"`` -> ``"real_world"``, ``"Caltech101"`` -> ``"caltech101"``.
    """
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def display_name(name: str) -> str:
    """Human-readable class name for prompts: ``"Alarm_Clock"`` -> ``"alarm clock"``."""
    return re.sub(r"[_\s]+", " ", name).strip().lower()


@dataclass(frozen=True)
class Benchmark:
    """One DomainBed benchmark.

    Attributes:
        name: config name on the Hub (``"officehome"``).
        title: display title (``"OfficeHome"``).
        folder: DomainBed folder under the data root (``"office_home"``).
        domain_folders: domain folder names on disk, sorted as DomainBed sorts them.
        classes: class folder names in DomainBed order (sorted); the ``ClassLabel`` names.
        class_aliases: extra accepted spellings of a class in a conclusion (normalised).
        description: one line for cards and ``--help``.
        embedded: True for the benchmark that ships inside the package.
    """

    name: str
    title: str
    folder: str
    domain_folders: tuple[str, ...]
    classes: tuple[str, ...]
    class_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    embedded: bool = False

    @property
    def domains(self) -> tuple[str, ...]:
        """Split names: the normalised domain folder names (``"real_world"``)."""
        return tuple(normalize_name(d) for d in self.domain_folders)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names prompts and conclusions use (``"alarm clock"``)."""
        return tuple(display_name(c) for c in self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def domain_config_name(self, domain: str) -> str:
        """Per-domain config name: ``officehome-real_world``."""
        return f"{self.name}-{self.domain(domain)}"

    def domain(self, name: str) -> str:
        """Normalise and check a domain given as split name or folder name.

        Raises:
            ValueError: naming the value and listing the valid domains.
        """
        normalized = normalize_name(name)
        if normalized not in self.domains:
            raise ValueError(
                f"Unknown domain {name!r} for benchmark {self.name!r}. Valid domains: {', '.join(self.domains)}."
            )
        return normalized

    def domain_folder(self, domain: str) -> str:
        """The on-disk folder of a domain given by split or folder name."""
        return self.domain_folders[self.domains.index(self.domain(domain))]

    def class_index(self, name: str) -> int:
        """Index of a class given by folder name or display name.

        Raises:
            ValueError: naming the value and listing the valid classes.
        """
        key = display_name(name)
        for index, candidate in enumerate(self.class_names):
            if candidate == key:
                return index
        raise ValueError(
            f"Unknown class {name!r} for benchmark {self.name!r}. Valid classes: {', '.join(self.classes)}."
        )


_OFFICEHOME_CLASSES = """
Alarm_Clock Backpack Batteries Bed Bike Bottle Bucket Calculator Calendar Candles Chair
Clipboards Computer Couch Curtains Desk_Lamp Drill Eraser Exit_Sign Fan File_Cabinet
Flipflops Flowers Folder Fork Glasses Hammer Helmet Kettle Keyboard Knives Lamp_Shade
Laptop Marker Monitor Mop Mouse Mug Notebook Oven Pan Paper_Clip Pen Pencil Postit_Notes
Printer Push_Pin Radio Refrigerator Ruler Scissors Screwdriver Shelf Sink Sneakers Soda
Speaker Spoon TV Table Telephone ToothBrush Toys Trash_Can Webcam
"""

_DOMAINNET_CLASSES = """
The_Eiffel_Tower The_Great_Wall_of_China The_Mona_Lisa aircraft_carrier airplane alarm_clock
ambulance angel animal_migration ant anvil apple arm asparagus axe backpack banana bandage
barn baseball baseball_bat basket basketball bat bathtub beach bear beard bed bee belt bench
bicycle binoculars bird birthday_cake blackberry blueberry book boomerang bottlecap bowtie
bracelet brain bread bridge broccoli broom bucket bulldozer bus bush butterfly cactus cake
calculator calendar camel camera camouflage campfire candle cannon canoe car carrot castle cat
ceiling_fan cell_phone cello chair chandelier church circle clarinet clock cloud coffee_cup
compass computer cookie cooler couch cow crab crayon crocodile crown cruise_ship cup diamond
dishwasher diving_board dog dolphin donut door dragon dresser drill drums duck dumbbell ear
elbow elephant envelope eraser eye eyeglasses face fan feather fence finger fire_hydrant
fireplace firetruck fish flamingo flashlight flip_flops floor_lamp flower flying_saucer foot
fork frog frying_pan garden garden_hose giraffe goatee golf_club grapes grass guitar hamburger
hammer hand harp hat headphones hedgehog helicopter helmet hexagon hockey_puck hockey_stick
horse hospital hot_air_balloon hot_dog hot_tub hourglass house house_plant hurricane ice_cream
jacket jail kangaroo key keyboard knee knife ladder lantern laptop leaf leg light_bulb lighter
lighthouse lightning line lion lipstick lobster lollipop mailbox map marker matches megaphone
mermaid microphone microwave monkey moon mosquito motorbike mountain mouse moustache mouth mug
mushroom nail necklace nose ocean octagon octopus onion oven owl paint_can paintbrush
palm_tree panda pants paper_clip parachute parrot passport peanut pear peas pencil penguin
piano pickup_truck picture_frame pig pillow pineapple pizza pliers police_car pond pool
popsicle postcard potato power_outlet purse rabbit raccoon radio rain rainbow rake
remote_control rhinoceros rifle river roller_coaster rollerskates sailboat sandwich saw
saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep shoe shorts
shovel sink skateboard skull skyscraper sleeping_bag smiley_face snail snake snorkel snowflake
snowman soccer_ball sock speedboat spider spoon spreadsheet square squiggle squirrel stairs
star steak stereo stethoscope stitches stop_sign stove strawberry streetlight string_bean
submarine suitcase sun swan sweater swing_set sword syringe t-shirt table teapot teddy-bear
telephone television tennis_racquet tent tiger toaster toe toilet tooth toothbrush toothpaste
tornado tractor traffic_light train tree triangle trombone truck trumpet umbrella underwear
van vase violin washing_machine watermelon waterslide whale wheel windmill wine_bottle
wine_glass wristwatch yoga zebra zigzag
"""

DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="pacs",
            title="PACS",
            folder="PACS",
            domain_folders=("art_painting", "cartoon", "photo", "sketch"),
            classes=("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
            description="PACS: photo, art painting, cartoon and sketch renditions of 7 classes.",
        ),
        Benchmark(
            name="vlcs",
            title="VLCS",
            folder="VLCS",
            domain_folders=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
            classes=("bird", "car", "chair", "dog", "person"),
            description="VLCS: 5 classes across four photo datasets with different biases.",
        ),
        Benchmark(
            name="officehome",
            title="OfficeHome",
            folder="office_home",
            domain_folders=("Art", "Clipart", "Product", "Real World"),
            classes=tuple(_OFFICEHOME_CLASSES.split()),
            class_aliases={"tv": ("television",), "postit notes": ("post-it notes", "sticky notes")},
            description="OfficeHome: 65 office and home objects in art, clipart, product and real-world images.",
        ),
        Benchmark(
            name="terrainc",
            title="TerraIncognita",
            folder="terra_incognita",
            domain_folders=("location_100", "location_38", "location_43", "location_46"),
            classes=(
                "bird",
                "bobcat",
                "cat",
                "coyote",
                "dog",
                "empty",
                "opossum",
                "rabbit",
                "raccoon",
                "squirrel",
            ),
            description="TerraIncognita: camera-trap photos of 10 classes from four locations.",
        ),
        Benchmark(
            name="domainnet",
            title="DomainNet",
            folder="domain_net",
            domain_folders=("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
            classes=tuple(_DOMAINNET_CLASSES.split()),
            description="DomainNet: 345 classes in six domains.",
        ),
        Benchmark(
            name="rotdigits",
            title="RotatedDigits",
            folder="rotated_digits",
            domain_folders=("rot0", "rot30", "rot60", "rot90"),
            classes=DIGIT_CLASSES,
            description=(
                "RotatedDigits (embedded): scikit-learn's 1,797 handwritten digits, split into four "
                "disjoint domains rotated by 0/30/60/90 degrees, as DomainBed's RotatedMNIST."
            ),
            embedded=True,
        ),
    )
}

EMBEDDED_BENCHMARK = "rotdigits"


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """Look a benchmark up by config name (case-insensitive), title or DomainBed folder.

    Raises:
        ValueError: naming the value and listing the valid benchmarks.
    """
    if isinstance(name, Benchmark):
        return name
    key = normalize_name(str(name)).replace("_", "")
    for benchmark in BENCHMARKS.values():
        keys = {benchmark.name, benchmark.title.lower(), benchmark.folder.lower().replace("_", "")}
        if key in keys:
            return benchmark
    raise ValueError(
        f"Unknown benchmark {name!r}. Valid benchmarks: {', '.join(BENCHMARKS)} "
        f"({EMBEDDED_BENCHMARK!r} ships with the package, no download needed)."
    )
