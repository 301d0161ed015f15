"""The table of `scripts/bench.sh --only-socketio`: memory per idle
connection and server CPU per delivery at each fixed rate, for chat's native
path, its Socket.IO endpoint and the Socket.IO baseline; and every run in
full to the JSON file named first."""

import json
import sys


def main() -> None:
    out, paths = sys.argv[1], sys.argv[2:]
    runs = [json.load(open(p)) for p in paths]
    with open(out, "w") as f:
        json.dump({"runs": runs}, f, indent=1)
    order = ["chat", "chat-socketio", "socketio"]
    idle = {r["target"]: r["memory"]["kib_per_connection"] for r in runs if r.get("memory")}
    print("\nidle: KiB per connection (RSS growth / connections)")
    for t in order:
        if t in idle:
            print(f"  {t:<14} {idle[t]:8.2f}")
    print("\nrooms, fixed rates: server CPU us per delivery (of which kernel), deliveries/s, kept up")
    for r in runs:
        for step in r.get("fixed") or []:
            cpu = step.get("server_cpu_us_per_delivery")
            kern = step.get("server_kernel_us_per_delivery")
            print(
                f"  {r['target']:<14} {step['rate_per_user']:5.2f} msg/s/user  "
                f"{cpu if cpu is None else round(cpu, 2)!s:>7} us ({kern if kern is None else round(kern, 2)!s:>6})  "
                f"{step['deliveries_per_s']:9.0f}/s  {'yes' if step['kept_up'] else 'NO'}"
            )
    print(f"\nall runs: {out}")


if __name__ == "__main__":
    main()
