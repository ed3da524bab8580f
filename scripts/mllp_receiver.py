"""A RIS for tests: an MLLP server (the `hl7` package's) that parses every message it
receives with the `hl7` package and prints it as one JSON line, then answers with the
next code of ANSWERS (AA, AE, AR, or `none`: no answer at all), AA once they run out.

Usage: mllp_receiver.py ANSWERS  (e.g. AA,AE,none). The first line printed is the port.
"""

import asyncio
import json
import sys

import hl7
import hl7.mllp


def fields(message):
    """What a test checks of an ORU^R01, read with the hl7 package and unescaped."""
    pid = message.segment("PID")
    obr = message.segment("OBR")
    name = pid[5][0]
    observations = []
    for obx in message.segments("OBX"):
        observations.append(
            {
                "type": str(obx[2]),
                "id": message.unescape(str(obx[3][0][0])),
                "sub_id": str(obx[4]),
                "value": message.unescape(str(obx[5])),
                "unit": str(obx[6][0][0]) if str(obx[6]) else "",
                "status": str(obx[11]),
            }
        )
    return {
        "type": str(message.segment("MSH")[9]),
        "control_id": str(message.segment("MSH")[10]),
        "version": str(message.segment("MSH")[12]),
        "patient_id": message.unescape(str(pid[3][0][0])),
        "family_name": message.unescape(str(name[0])),
        "given_name": message.unescape(str(name[1])) if len(name) > 1 else "",
        "accession_number": message.unescape(str(obr[2])),
        "study_uid": message.unescape(str(obr[18])),
        "observations": observations,
    }


async def main(answers):
    async def serve(reader, writer):
        try:
            while True:
                message = await reader.readmessage()
                code = answers.pop(0) if answers else "AA"
                line = fields(message)
                line["answered"] = code
                print(json.dumps(line), flush=True)
                if code == "none":
                    # Say nothing; the sender's time-out ends the exchange.
                    await reader.read()
                    return
                writer.writemessage(message.create_ack(ack_code=code))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(serve, host="127.0.0.1", port=0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main([a for a in sys.argv[1].split(",") if a]))
