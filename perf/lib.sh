# Shared by the perf scripts (sourced, not run): a generated instrument
# master, and the addresses of a server they started.

# write_master N FILE: a master of tokens 1..=N (SYM1, SYM2, …).
write_master() {
    python3 -c "
print('token,exchange,symbol,name,isin,tick_size,lot_size,price_decimals')
for t in range(1, $1 + 1): print(f'{t},NSE,SYM{t},Bench {t},,0.05,1,2')" > "$2"
}

# server_addrs OUTFILE: wait up to 20 s for the banner a server writes to
# OUTFILE, then set ADDR (its WebSocket/HTTP address) and UDP (the address
# of its first feed). Returns 1 if no banner came.
server_addrs() {
    for _ in $(seq 1 100); do grep -q ws:// "$1" 2>/dev/null && break; sleep 0.2; done
    ADDR=$(grep -o '127[^/]*' "$1" | head -1)
    [ -n "$ADDR" ] || return 1
    UDP=$(curl -s "http://$ADDR/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["feeds"][0]["address"])')
}
