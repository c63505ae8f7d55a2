package resty.ffi;

import java.io.File;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.List;

/** Called by libffi_java.so's libffi_init: finds the class and runs its init method. */
public final class Loader {
    private Loader() {}

    /**
     * The original's hot reload entry, {@code "resty.ffi.Loader,init,my.Cls?,method[,rest]"}:
     * loads {@code my.Cls} through a fresh class loader, then calls its method.
     */
    public static int init(String cfg, long tq) {
        String[] parts = cfg != null ? cfg.split(",", 3) : new String[0];
        if (parts.length < 2 || parts[0].isEmpty() || parts[1].isEmpty()) {
            System.err.println("ffi_java: bad cfg \"" + cfg + "\" for resty.ffi.Loader: want \"class?,method[,rest]\"");
            return 2;
        }
        String cls = parts[0].endsWith("?") ? parts[0].substring(0, parts[0].length() - 1) : parts[0];
        return init(cls, parts[1], parts.length > 2 ? parts[2] : null, tq, true);
    }

    /** Returns the method's rc, or -1 (the failure printed to stderr, the host's error log). */
    public static int init(String cls, String method, String rest, long tq, boolean fresh) {
        try {
            Class<?> c = fresh ? new FreshLoader(cls).loadClass(cls)
                               : Class.forName(cls, true, ClassLoader.getSystemClassLoader());
            Method m = c.getMethod(method, String.class, long.class);
            if (!Modifier.isStatic(m.getModifiers()) || m.getReturnType() != int.class) {
                throw new NoSuchMethodException(cls + "." + method + " is not static int (String, long)");
            }
            return (Integer) m.invoke(null, rest, tq);
        } catch (InvocationTargetException e) {
            System.err.println("ffi_java: " + cls + "." + method + " failed:");
            e.getCause().printStackTrace();
        } catch (Throwable e) {
            System.err.println("ffi_java: " + cls + "." + method + " failed:");
            e.printStackTrace();
        }
        System.err.flush();
        return -1;
    }

    /**
     * Loads the class, its nested classes and the rest of its package afresh
     * from the class path (hot reload); everything else, resty.ffi included,
     * comes from the system class loader.
     */
    private static final class FreshLoader extends URLClassLoader {
        private final String cls;
        private final String pkg;

        FreshLoader(String cls) throws MalformedURLException {
            super(classPath(), ClassLoader.getSystemClassLoader());
            this.cls = cls;
            int dot = cls.lastIndexOf('.');
            this.pkg = dot < 0 ? null : cls.substring(0, dot + 1);
        }

        private boolean owns(String name) {
            if (name.startsWith("resty.ffi.")) {
                return false;
            }
            return pkg != null ? name.startsWith(pkg) : name.equals(cls) || name.startsWith(cls + "$");
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            if (!owns(name)) {
                return super.loadClass(name, resolve);
            }
            synchronized (getClassLoadingLock(name)) {
                Class<?> c = findLoadedClass(name);
                if (c == null) {
                    try {
                        c = findClass(name);
                    } catch (ClassNotFoundException e) {
                        return super.loadClass(name, resolve);
                    }
                }
                if (resolve) {
                    resolveClass(c);
                }
                return c;
            }
        }

        private static URL[] classPath() throws MalformedURLException {
            List<URL> urls = new ArrayList<>();
            for (String p : System.getProperty("java.class.path").split(File.pathSeparator)) {
                if (!p.isEmpty()) {
                    urls.add(new File(p).toURI().toURL());
                }
            }
            return urls.toArray(new URL[0]);
        }
    }
}
