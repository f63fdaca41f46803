-- The requests of bench/soak.sh: one kind per wrk process (-t1), chosen by
-- the first script argument, so that every status can be judged against what
-- that kind must answer.
--
--   wrk -t1 -cC -dD -s bench/soak.lua URL -- KIND USERS ACCOUNTS POOR NONCE
--
-- USERS and ACCOUNTS: the seeded ids are 1..USERS and 1..ACCOUNTS, the
-- accounts random transfers use; ACCOUNTS+1..ACCOUNTS+200 serve only the
-- replayed Idempotency-Keys (ACCOUNTS+k pays ACCOUNTS+100+k one cent);
-- POOR: an account whose balance is 0 and only ever tries to send; NONCE:
-- makes this process's Idempotency-Keys unique. When wrk ends, prints one line
--
--   soak KIND requests=N expected=E unexpected=U statuses=200:N,404:M,...
--
-- where expected counts the answers KIND must give (`expect` below).

-- kind and statuses are globals: done() reads them from the thread
local users, accounts, poor, nonce
local counter = 0
statuses = {}
local json = {["Content-Type"] = "application/json"}

local function transfer(from, to, amount, key)
    local headers = {["Content-Type"] = "application/json"}
    if key then headers["Idempotency-Key"] = key end
    return wrk.format("POST", "/transfers", headers,
        string.format('{"from_account_id":%d,"to_account_id":%d,"amount_cents":%d}', from, to, amount))
end

local function two_accounts()
    local a = math.random(1, accounts)
    local b = math.random(1, accounts - 1)
    if b >= a then b = b + 1 end
    return a, b
end

-- what each kind sends, and the one status it must get back
local kinds = {
    -- reads
    user = {200, function() return wrk.format("GET", "/users/" .. math.random(1, users)) end},
    db = {200, function() return wrk.format("GET", "/db") end},
    fortunes = {200, function() return wrk.format("GET", "/fortunes") end},
    -- transfers (small amounts from rich accounts: never short of funds)
    transfer = {201, function()
        local a, b = two_accounts()
        return transfer(a, b, math.random(1, 100))
    end},
    -- every other request a fresh key, otherwise one of 100 keys always sent
    -- with the same body: a replay, answered from the stored outcome
    transfer_key = {201, function()
        if counter % 2 == 0 then
            local k = math.random(1, 100)
            return transfer(accounts + k, accounts + 100 + k, 1, "soak-replay-" .. k)
        end
        local a, b = two_accounts()
        return transfer(a, b, math.random(1, 100), string.format("soak-%s-%d", nonce, counter))
    end},
    -- errors
    not_found = {404, function()
        if counter % 3 == 0 then return wrk.format("GET", "/users/" .. (users + math.random(1, 1000000))) end
        if counter % 3 == 1 then return transfer(math.random(1, accounts), poor + counter, 1) end
        return wrk.format("GET", "/no/such/path/" .. counter)
    end},
    invalid = {422, function()
        if counter % 3 == 0 then return transfer(1, 2, -5) end
        if counter % 3 == 1 then return wrk.format("POST", "/users", json, '{"name":"","email":"no-at-sign"}') end
        return transfer(poor, math.random(1, accounts), 1) -- insufficient funds
    end},
    malformed = {400, function()
        if counter % 2 == 0 then return wrk.format("POST", "/users", json, '{"name": "x", "email": ') end
        return wrk.format("POST", "/transfers", json, '[1, 2, 3]')
    end},
    -- soak.sh used this key once with amount 1: another body is a conflict
    key_conflict = {409, function() return transfer(1, 2, 2, "soak-conflict") end},
}

init = function(args)
    kind, users, accounts, poor, nonce = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4]), args[5]
    assert(kinds[kind], "unknown kind " .. tostring(kind))
    math.randomseed(os.time() + tonumber(nonce))
end

request = function()
    counter = counter + 1
    return kinds[kind][2]()
end

response = function(status)
    statuses[status] = (statuses[status] or 0) + 1
end

local thread
setup = function(t) thread = t end

done = function()
    local got = thread:get("statuses")
    local k = thread:get("kind")
    local want = kinds[k][1]
    local codes, total, expected, parts = {}, 0, 0, {}
    for code, count in pairs(got) do
        codes[#codes + 1] = code
        total = total + count
        if code == want then expected = expected + count end
    end
    table.sort(codes)
    for _, code in ipairs(codes) do parts[#parts + 1] = code .. ":" .. got[code] end
    io.write(string.format("soak %s requests=%d expected=%d unexpected=%d statuses=%s\n",
        k, total, expected, total - expected, table.concat(parts, ",")))
end
