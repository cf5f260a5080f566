"""An OPC UA server for tests/collect_opcua.rs, served by asyncua (PyPI; .ci/run installs it).

Namespace "urn:streamgauge:test" holds, under Objects/Boiler:
  ns=2;s=Boiler.Temperature  Double  20 + 0.5 * tick
  ns=2;s=Boiler.Pressure     Float   1 + tick / 8          (exact in binary)
  ns=2;s=Boiler.Count        Int32   tick
  ns=2;s=Boiler.State        String  "running"            (not a number)
Every 100 ms all four change, with SourceTimestamp = BASE + tick * 100 ms (BASE below), so
a client can check each value against its own timestamp.
Usage: python3 opcua_server.py PORT
"""
import asyncio
import datetime
import logging
import sys

from asyncua import Server, ua

BASE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


async def main(port):
    logging.basicConfig(level=logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/streamgauge/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:streamgauge:test")
    boiler = await server.nodes.objects.add_object(ua.NodeId("Boiler", idx), "Boiler")
    nodes = {}
    for name, vt, init in [("Temperature", ua.VariantType.Double, 0.0),
                           ("Pressure", ua.VariantType.Float, 0.0),
                           ("Count", ua.VariantType.Int32, 0),
                           ("State", ua.VariantType.String, "starting")]:
        nodes[name] = await boiler.add_variable(ua.NodeId(f"Boiler.{name}", idx), name,
                                                ua.Variant(init, vt))
    async with server:
        tick = 0
        while True:
            ts = BASE + datetime.timedelta(milliseconds=100 * tick)
            for name, value, vt in [("Temperature", 20 + 0.5 * tick, ua.VariantType.Double),
                                    ("Pressure", 1 + tick / 8, ua.VariantType.Float),
                                    ("Count", tick, ua.VariantType.Int32),
                                    ("State", "running", ua.VariantType.String)]:
                dv = ua.DataValue(ua.Variant(value, vt), SourceTimestamp=ts,
                                  ServerTimestamp=datetime.datetime.now(datetime.timezone.utc))
                await nodes[name].write_value(dv)
            tick += 1
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
