"""Pure wire codecs for the devices: framing (COBS), CRC, and message encoding/decoding.

Bytes in, messages out (and back). Never does I/O, never keeps time, imports nothing of ours.
"""
