#if canImport(Glibc)
import Glibc
#endif

/// A NULL-terminated array of C strings for `posix_spawn`/`execve`, freed explicitly with
/// ``free()``. Shared by batond's side of the keeper and the keeper itself.
public struct CStringArray {
    /// The array, ending with a NULL entry.
    public let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>

    /// Copies `strings` into C memory.
    public init(_ strings: [String]) {
        pointer = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() { pointer[index] = strdup(string) }
        pointer[strings.count] = nil
    }

    /// Frees every string and the array.
    public func free() {
        var index = 0
        while let string = pointer[index] {
            Glibc.free(string)
            index += 1
        }
        pointer.deallocate()
    }
}
