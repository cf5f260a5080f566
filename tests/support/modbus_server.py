"""A Modbus TCP device for tests/collect_modbus.rs, served by pymodbus (Debian python3-pymodbus).

Every 100 ms the registers change together, derived from one counter `tick`:
  holding 0      u16   tick
  holding 1-2    f32   20 + 0.5 * tick          (big-endian words)
  holding 3-4    i32   -1000 * tick             (little-endian word order)
  input   0      u16   tick
  input   1      i16   -tick                     (scaled by 0.1 in the map)
  input   10-11  u32   70000 * tick              (big-endian words)
Registers exist at 0-99 of each table; reading above answers exception 2.
Usage: python3 modbus_server.py PORT
"""
import asyncio
import struct
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartAsyncTcpServer


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


async def update(store):
    tick = 0
    while True:
        t16 = tick % 65536
        f = words("f", 20.0 + 0.5 * t16)
        i = words("i", -1000 * t16)
        store.setValues(3, 0, [t16] + f + [i[1], i[0]])
        store.setValues(4, 0, [t16, (-t16) % 65536])
        store.setValues(4, 10, words("I", 70000 * t16))
        tick += 1
        await asyncio.sleep(0.1)


async def main(port):
    store = ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, [0] * 100),
        ir=ModbusSequentialDataBlock(0, [0] * 100),
        zero_mode=True,
    )
    context = ModbusServerContext(slaves=store, single=True)
    asyncio.get_running_loop().create_task(update(store))
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
