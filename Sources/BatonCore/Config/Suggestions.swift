/// The accepted key an unknown `key` was most likely meant to be, or nil when none is close.
///
/// Close means: the same once case, `_`, `-` and spaces are ignored (`stateDir`, `state-dir`);
/// or the start of a longer key (`fence` for `fence_budget`, at least 3 characters); or at most
/// 1 edit away for keys of up to 4 characters and 2 edits for longer ones, where swapping two
/// neighbours counts as one edit (`prioirty`).
func suggestion(for key: String, among candidates: [String]) -> String? {
    func normalized(_ text: String) -> [Character] {
        Array(text.lowercased().filter { $0 != "_" && $0 != "-" && $0 != " " })
    }
    let wanted = normalized(key)
    if wanted.isEmpty { return nil }

    var best: (candidate: String, distance: Int)?
    for candidate in candidates {
        let target = normalized(candidate)
        if target == wanted { return candidate }
        if wanted.count >= 3, target.starts(with: wanted) {
            best = (candidate, 0)
            continue
        }
        let distance = editDistance(wanted, target)
        let allowed = min(wanted.count, target.count) <= 4 ? 1 : 2
        if distance <= allowed, distance < (best?.distance ?? .max) {
            best = (candidate, distance)
        }
    }
    return best?.candidate
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours each count 1.
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var table = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { table[i][0] = i }
    for j in 0...b.count { table[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            var value = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                value = min(value, table[i - 2][j - 2] + 1)
            }
            table[i][j] = value
        }
    }
    return table[a.count][b.count]
}
