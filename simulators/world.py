"""The simulated physical world the two devices share: the room air and the QA holder geometry.

During an output check the ion chamber sits in the QA holder and sees the source's output; the
electrometer's charge depends on that output and on the air density of the room. The console never
reads this module: it must measure the world through the devices like on a real bench.
"""
from __future__ import annotations

from dataclasses import dataclass

REFERENCE_TEMPERATURE_C = 20.0
REFERENCE_PRESSURE_KPA = 101.325


@dataclass
class Room:
    """Room air. A vented chamber's reading scales with air density: warm/low pressure reads low."""

    temperature_c: float = REFERENCE_TEMPERATURE_C
    pressure_kpa: float = REFERENCE_PRESSURE_KPA

    def air_density_factor(self) -> float:
        """k_TP of this room relative to 20 °C / 101.325 kPa (raw reading = true / k_TP).

        Written independently of the console's own k_TP code on purpose.
        """
        return ((273.15 + self.temperature_c) / (273.15 + REFERENCE_TEMPERATURE_C)) * (
            REFERENCE_PRESSURE_KPA / self.pressure_kpa)
